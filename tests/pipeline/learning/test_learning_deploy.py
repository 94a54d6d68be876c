"""`cbloop deploy` and `cbloop rollback`: the promotion rule, states, records, refusals."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result
from conftest import LogAndJoin

from cbloop.clock import format_ts
from cbloop.registry import ModelMetadata, ModelRegistry
from cbloop.settings import PromotionSettings, Settings
from cbloop.storage import open_store
from cbloop_pipeline.deploy import DeployError, promotion_verdict
from cbloop_pipeline.learning import (
    deploy_command,
    evaluate_command,
    rollback_command,
    train_command,
)
from cbloop_pipeline.warehouse import connect


def _registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(open_store(settings.storage))


def _decisions(settings: Settings) -> list[tuple[Any, ...]]:
    con = connect(settings.warehouse)
    try:
        return con.execute(
            "SELECT action, model_id, previous_model_id, promoted, forced, estimator, reason "
            "FROM deployment_decisions ORDER BY decided_at"
        ).fetchall()
    finally:
        con.close()


def _inverted_history(source: Path, dest: Path) -> Path:
    """The same logged events with every reward flipped: a model learns the worst actions."""
    out = []
    for line in source.read_bytes().splitlines():
        if line:
            event = orjson.loads(line)
            event["_label_cost"] = -1.0 - event["_label_cost"]
            out.append(orjson.dumps(event))
    dest.write_bytes(b"\n".join(out) + b"\n")
    return dest


def test_a_model_that_is_worse_offline_is_not_promoted(
    lsettings: Settings, log_and_join: LogAndJoin, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    _, job = log_and_join(2000, seed=1)
    good = train_command(lsettings, "default").model
    assert good is not None
    evaluate_command(lsettings, "default", model_id=good.model_id)
    assert deploy_command(lsettings, "default").promoted  # beats the logging policy

    history = _inverted_history(lsettings.storage.root / job.train_key, tmp_path / "bad.dsjson")
    bad = train_command(lsettings, "default", fresh=True, warm_start=history).model
    assert bad is not None
    record = evaluate_command(lsettings, "default", model_id=bad.model_id)
    dr = record["policies"]
    assert dr["candidate"]["estimates"]["dr"]["value"] < dr["deployed"]["estimates"]["dr"]["value"]

    result = cli("deploy", "--model", bad.model_id)
    assert result.exit_code == 0, result.output
    assert "not promoted" in result.output

    registry = _registry(lsettings)
    pointer = registry.current("default")
    assert pointer is not None and pointer.model_id == good.model_id
    assert registry.metadata("default", bad.model_id).state == "trained"
    assert registry.metadata("default", good.model_id).state == "deployed"
    decisions = _decisions(lsettings)
    assert [d[:6] for d in decisions] == [
        ("deploy", good.model_id, None, True, False, "dr"),
        ("deploy", bad.model_id, good.model_id, False, False, "dr"),
    ]
    assert "<=" in decisions[1][6]


def test_a_better_model_is_promoted_and_rollback_points_back(
    lsettings: Settings, log_and_join: LogAndJoin, cli: Callable[..., Result]
) -> None:
    registry = _registry(lsettings)
    initial = registry.ensure_initial_model("default", lsettings.experiment("default")).model_id
    log_and_join(2000, seed=1)
    candidate = train_command(lsettings, "default").model
    assert candidate is not None
    evaluate_command(lsettings, "default")

    decision = deploy_command(lsettings, "default")
    assert decision.promoted and decision.model_id == candidate.model_id
    assert decision.previous_model_id == initial
    pointer = registry.current("default")
    assert pointer is not None and pointer.model_id == candidate.model_id
    assert decision.reason in pointer.reason
    assert registry.metadata("default", candidate.model_id).state == "deployed"
    assert registry.metadata("default", initial).state == "retired"

    result = cli("rollback")
    assert result.exit_code == 0, result.output
    pointer = registry.current("default")
    assert pointer is not None and pointer.model_id == initial
    assert registry.metadata("default", initial).state == "deployed"
    assert registry.metadata("default", candidate.model_id).state == "retired"
    # The model rolled back from is not a default target: nothing earlier remains.
    with pytest.raises(DeployError, match="no earlier deployed model"):
        rollback_command(lsettings, "default")
    assert (
        rollback_command(lsettings, "default", to=candidate.model_id).model_id == candidate.model_id
    )
    assert [d[0] for d in _decisions(lsettings)] == ["deploy", "rollback", "rollback"]


def test_deploy_refuses_a_model_file_vw_cannot_load(lsettings: Settings, tmp_path: Path) -> None:
    registry = _registry(lsettings)
    experiment = lsettings.experiment("default")
    initial = registry.ensure_initial_model("default", experiment).model_id
    garbage = tmp_path / "model.vw"
    garbage.write_bytes(b"\x00not a vw model\xff" * 64)
    meta = ModelMetadata(
        model_id=registry.new_model_id(),
        experiment="default",
        vw_args=experiment.vw_arguments(),
        created_at=format_ts(),
    )
    registry.save(garbage, meta)
    with pytest.raises(DeployError, match="cannot be loaded"):
        deploy_command(lsettings, "default", model_id=meta.model_id, force=True)
    pointer = registry.current("default")
    assert pointer is not None and pointer.model_id == initial
    assert registry.metadata("default", meta.model_id).state == "refused"


def test_a_model_trained_with_other_vw_arguments_is_not_deployable(
    make_settings: Callable[..., Settings], lsettings: Settings, log_and_join: LogAndJoin
) -> None:
    log_and_join(300, seed=1)
    model = train_command(lsettings, "default").model
    assert model is not None
    changed = make_settings(experiments={"default": {"vw_args": "--interactions :: -b 16"}})
    with pytest.raises(DeployError, match="VW arguments"):
        deploy_command(changed, "default", model_id=model.model_id, force=True)


def _estimate(value: float, low: float | None = None) -> dict[str, Any]:
    return {"value": value, "ci_low": value - 0.1 if low is None else low, "ci_high": value + 0.1}


def _evaluation(
    cand: float,
    dep: float | None,
    *,
    n: int = 500,
    low: float | None = None,
    deployed: str | None = "m-dep",
) -> dict[str, Any]:
    return {
        "eval_id": "ev-1",
        "n_events": n,
        "deployed_model_id": deployed,
        "policies": {
            "candidate": {
                "estimates": {"dr": _estimate(cand, low), "ips": _estimate(cand - 0.2, low)}
            },
            "deployed": None
            if dep is None
            else {"estimates": {"dr": _estimate(dep), "ips": _estimate(dep)}},
            "logging": {"estimates": {"logging": _estimate(0.3)}},
        },
    }


@pytest.mark.parametrize(
    ("rule", "evaluation", "deployed", "promoted", "reason"),
    [
        (
            PromotionSettings(),
            _evaluation(0.6, 0.5),
            "m-dep",
            True,
            "0.60000 > deployed m-dep dr 0.50000",
        ),
        (PromotionSettings(), _evaluation(0.5, 0.5), "m-dep", False, "<="),
        (PromotionSettings(margin=0.2), _evaluation(0.6, 0.5), "m-dep", False, "margin 0.2"),
        (
            PromotionSettings(estimator="ips"),
            _evaluation(0.6, 0.5),
            "m-dep",
            False,
            "ips estimate 0.40000",
        ),
        (
            PromotionSettings(use_lower_bound=True),
            _evaluation(0.6, 0.5),
            "m-dep",
            False,
            "lower bound 0.50000",
        ),
        (
            PromotionSettings(use_lower_bound=True),
            _evaluation(0.7, 0.5, low=0.55),
            "m-dep",
            True,
            "lower bound",
        ),
        (
            PromotionSettings(min_events=1000),
            _evaluation(0.9, 0.5),
            "m-dep",
            False,
            "min_events=1000",
        ),
        (PromotionSettings(), _evaluation(0.9, 0.5), "m-other", False, "evaluate again"),
        (PromotionSettings(), _evaluation(math.nan, 0.5), "m-dep", False, "undefined"),
        (PromotionSettings(), _evaluation(0.4, None, deployed=None), None, True, "logging policy"),
        # The deployed model had other VW arguments, so it was named but not scored.
        (PromotionSettings(), _evaluation(0.4, None), "m-dep", True, "logging policy"),
        (PromotionSettings(), None, "m-dep", False, "no evaluation"),
    ],
)
def test_promotion_rule(
    rule: PromotionSettings,
    evaluation: dict[str, Any] | None,
    deployed: str | None,
    promoted: bool,
    reason: str,
) -> None:
    verdict = promotion_verdict(rule, evaluation, deployed)
    assert verdict.promoted is promoted
    assert reason in verdict.reason


def test_rollback_from_a_refused_model_points_back_to_the_one_still_serving(
    lsettings: Settings, tmp_path: Path
) -> None:
    registry = _registry(lsettings)
    experiment = lsettings.experiment("default")
    initial = registry.ensure_initial_model("default", experiment).model_id
    good = registry.create_fresh("default", experiment, note="good")
    assert deploy_command(lsettings, "default", model_id=good.model_id, force=True).promoted
    garbage = tmp_path / "model.vw"
    garbage.write_bytes(b"garbage")
    bad = ModelMetadata(
        model_id=registry.new_model_id(),
        experiment="default",
        vw_args=experiment.vw_arguments(),
        created_at=format_ts(),
    )
    registry.save(garbage, bad)
    registry.set_current("default", bad.model_id, reason="a bad deploy")
    bad.state = "refused"  # what the service's workers record
    registry.update_metadata(bad)

    decision = rollback_command(lsettings, "default")
    assert decision.model_id == good.model_id and decision.previous_model_id == bad.model_id
    pointer = registry.current("default")
    assert pointer is not None and pointer.model_id == good.model_id
    assert registry.metadata("default", good.model_id).state == "deployed"
    assert registry.metadata("default", bad.model_id).state == "refused"
    assert registry.metadata("default", initial).state == "retired"
