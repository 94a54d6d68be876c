"""End to end on the synthetic world: real VW policy, real VW reward model, known truth."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import vowpalwabbit

from cbloop_pipeline.ope.evaluate import EvaluationResult, evaluate_file
from cbloop_pipeline.ope.feedback import InvalidFeedback
from cbloop_pipeline.ope.reward_model import RewardModel, RewardModelMismatch, fit_reward_model


@dataclass(frozen=True)
class Straightforward:
    event_id: list[str]
    reward: np.ndarray
    logged_probability: np.ndarray
    target_probability: np.ndarray


@pytest.fixture(scope="module")
def straightforward(world: Any) -> Straightforward:
    """Per-event quantities computed the obvious way: json.loads and ws.predict per line."""
    args = [*world.args.split(), "--dsjson", "-t", "--quiet", "-i", str(world.model)]
    ws = vowpalwabbit.Workspace(arg_list=args)
    ids, rewards, logged, target = [], [], [], []
    try:
        with world.eval.open() as fh:
            for line in fh:
                event = orjson.loads(line)
                pmf = ws.predict(line)
                ids.append(event["EventId"])
                rewards.append(-event["_label_cost"])
                logged.append(event["_label_probability"])
                target.append(pmf[event["_label_Action"] - 1])
    finally:
        ws.finish()
    return Straightforward(ids, np.array(rewards), np.array(logged), np.array(target))


@pytest.fixture(scope="module")
def shared_model(world: Any) -> RewardModel:
    return fit_reward_model(world.eval, folds=2, seed=0)


@pytest.fixture(scope="module")
def result(world: Any) -> EvaluationResult:
    return evaluate_file(world.eval, world.model, world.args, folds=2, seed=0)


def test_ips_and_dr_intervals_contain_the_true_value(world: Any, result: EvaluationResult) -> None:
    truth = world.model_value

    for name in ("ips", "dr"):
        est = result.estimates[name]
        assert est.ci_low <= truth <= est.ci_high, (name, est, truth)
        assert est.ci_high - est.ci_low < 0.06  # informative, not vacuous


def test_snips_is_close_to_the_true_value(world: Any, result: EvaluationResult) -> None:
    assert result.estimates["snips"].value == pytest.approx(world.model_value, abs=0.02)


def test_logging_policy_interval_contains_its_true_value(
    world: Any, result: EvaluationResult
) -> None:
    est = result.logging_policy

    assert est.ci_low <= world.logging_value <= est.ci_high
    assert est.n == result.n == 20000


def test_ips_and_snips_equal_a_straightforward_computation(
    result: EvaluationResult, straightforward: Straightforward
) -> None:
    w = straightforward.target_probability / straightforward.logged_probability
    r = straightforward.reward

    assert result.estimates["ips"].value == pytest.approx(float(np.mean(w * r)), rel=1e-5)
    assert result.estimates["snips"].value == pytest.approx(
        float(np.sum(w * r) / np.sum(w)), rel=1e-5
    )
    assert result.estimates["ips"].max_weight == pytest.approx(float(w.max()), rel=1e-5)
    assert result.estimates["ips"].ess == pytest.approx(
        float(w.sum() ** 2 / (w**2).sum()), rel=1e-5
    )


def test_per_event_arrays_line_up_with_the_file(
    result: EvaluationResult, straightforward: Straightforward
) -> None:
    assert list(result.event_id) == straightforward.event_id
    np.testing.assert_array_equal(result.reward, straightforward.reward)
    np.testing.assert_array_equal(result.logged_probability, straightforward.logged_probability)
    np.testing.assert_allclose(
        result.target_probability, straightforward.target_probability, rtol=1e-5, atol=1e-6
    )
    assert result.dm_logged.shape == result.dm_policy.shape == (20000,)
    assert set(result.all_estimates()) == {"ips", "snips", "dr", "sndr", "switch_dr", "logging"}


def test_dr_recomputed_from_per_event_arrays(result: EvaluationResult) -> None:
    w = result.target_probability / result.logged_probability
    terms = result.dm_policy + w * (result.reward - result.dm_logged)

    assert result.estimates["dr"].value == pytest.approx(float(terms.mean()))


def test_candidate_and_deployed_share_one_reward_model(
    world: Any, shared_model: RewardModel, result: EvaluationResult
) -> None:
    candidate = evaluate_file(world.eval, world.model, world.args, reward_model=shared_model)
    deployed = evaluate_file(world.eval, world.deployed, world.args, reward_model=shared_model)

    np.testing.assert_array_equal(candidate.dm_logged, deployed.dm_logged)
    # Same folds and seed fitted afresh inside evaluate_file give the same model (the fit
    # is deterministic).
    np.testing.assert_array_equal(candidate.dm_logged, result.dm_logged)
    assert candidate.estimates["dr"] == result.estimates["dr"]
    # The two policies differ, and so do their estimates, in the right direction.
    assert world.deployed_value < world.model_value
    assert deployed.estimates["dr"].value < candidate.estimates["dr"].value
    assert (
        deployed.estimates["dr"].ci_low <= world.deployed_value <= deployed.estimates["dr"].ci_high
    )


def test_reward_model_of_another_file_is_refused(world: Any, tmp_path: Path) -> None:
    other = tmp_path / "train_as_eval.dsjson"
    other.write_bytes(world.train.read_bytes())
    model = fit_reward_model(other, folds=2)

    with pytest.raises(RewardModelMismatch):
        evaluate_file(world.eval, world.model, world.args, reward_model=model)


def test_empty_eval_file_is_refused(world: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty.dsjson"
    empty.write_bytes(b"")

    with pytest.raises(InvalidFeedback):
        evaluate_file(empty, world.model, world.args)
