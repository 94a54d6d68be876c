"""Baselines on a tiny stream with known values, and the in-process online learner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cbloop.settings import ExperimentSettings
from cbloop_pipeline.simulate.baselines import OnlineLearner, expected_baselines, online_vw
from cbloop_pipeline.simulate.worlds import SyntheticWorld, TableWorld
from cbloop_pipeline.tables import load_table

# Class "a" is the row class of 4 rows out of 6: the best fixed action.
TABLE = """\
1 1 a
2 2 a
3 3 b
4 4 a
5 5 c
6 6 a
"""


@pytest.fixture
def world(tmp_path: Path) -> TableWorld:
    path = tmp_path / "t.txt"
    path.write_text(TABLE)
    return TableWorld(load_table(path), seed=0, length=6)


def test_expected_baselines_on_a_tiny_table(world: TableWorld) -> None:
    b = expected_baselines(world, list(range(6)))
    assert b.best_action == "a"
    np.testing.assert_allclose(b.uniform, np.full(6, 1 / 3))
    np.testing.assert_allclose(b.oracle, np.ones(6))
    assert b.best_fixed.mean() == pytest.approx(4 / 6)
    assert sorted(b.best_fixed) == [0, 0, 1, 1, 1, 1]


def test_best_fixed_is_judged_in_hindsight_over_the_given_positions(world: TableWorld) -> None:
    ts = [t for t in range(6) if world.label(t) == "b"]
    assert expected_baselines(world, ts).best_action == "b"


def test_expected_baselines_of_the_synthetic_world_are_exact_expectations() -> None:
    world = SyntheticWorld(seed=2, length=50)
    b = expected_baselines(world, list(range(10, 50)))
    table = np.vstack([world.click_prob[int(world.visitors[t])] for t in range(10, 50)])
    np.testing.assert_allclose(b.uniform, table.mean(axis=1))
    np.testing.assert_allclose(b.oracle, table.max(axis=1))
    np.testing.assert_allclose(b.best_fixed, table[:, int(table.sum(axis=0).argmax())])


def test_online_learner_records_its_choices_and_rewards(world: TableWorld) -> None:
    args = ExperimentSettings().vw_arguments()
    result = online_vw(
        world, args, experiment="e", warm_start=[], ts=[0, 1, 2], event_ids=["x0", "x1", "x2"]
    )
    assert len(result.actions) == 3
    assert all(0 < p <= 1 for p in result.probabilities)
    for t, action, reward in zip(range(3), result.actions, result.rewards, strict=True):
        assert reward == (1.0 if action == world.label(t) else 0.0)


def test_online_learner_choices_are_reproducible(world: TableWorld) -> None:
    args = ExperimentSettings().vw_arguments()
    runs = [
        online_vw(
            world, args, experiment="e", warm_start=[], ts=[0, 1, 2, 3], event_ids=list("abcd")
        )
        for _ in range(2)
    ]
    assert runs[0].actions == runs[1].actions


def test_online_learner_learns_the_synthetic_world() -> None:
    world = SyntheticWorld(seed=0, length=1600)
    settings = ExperimentSettings.model_validate(world.experiment_config())
    ts = list(range(100, 1600))
    result = online_vw(
        world,
        settings.vw_arguments(),
        experiment="e",
        warm_start=world.warm_start_lines(100, "e"),
        ts=ts,
        event_ids=[f"e{t}" for t in ts],
    )
    b = expected_baselines(world, ts)
    # Over the last third it must clearly beat both uniform and the best single item.
    assert result.rewards[-500:].mean() > b.uniform.mean() + 0.15
    assert result.rewards[-500:].mean() > b.best_fixed.mean()


def test_online_learner_learns_the_warm_start_history_first(world: TableWorld) -> None:
    args = ExperimentSettings().vw_arguments()
    lines = world.warm_start_lines(6, "e") * 20
    learner = OnlineLearner(args, "e")
    learner.warm_start(lines)
    assert learner.examples_learned == len(lines)
    learner.close()
