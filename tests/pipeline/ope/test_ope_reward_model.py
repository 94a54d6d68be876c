from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from cbloop_pipeline.ope.features import read_events_and_features
from cbloop_pipeline.ope.logged import read_logged_events
from cbloop_pipeline.ope.reward_model import (
    RewardModelMismatch,
    assign_folds,
    fit_cross_fitted,
    fit_reward_model,
)


def _ids(n: int) -> np.ndarray:
    out = np.empty(n, dtype=object)
    out[:] = [f"event-{i}" for i in range(n)]
    return out


def test_folds_are_deterministic_balanced_and_seeded() -> None:
    ids = _ids(5000)

    first = assign_folds(ids, 5, seed=0)
    again = assign_folds(ids, 5, seed=0)
    other = assign_folds(ids, 5, seed=1)

    np.testing.assert_array_equal(first, again)
    assert set(first.tolist()) == {0, 1, 2, 3, 4}
    assert np.bincount(first).min() > 900  # ~1000 per fold
    assert (first != other).mean() > 0.5


def test_fold_of_an_event_does_not_depend_on_file_order() -> None:
    ids = _ids(100)

    forward = assign_folds(ids, 3, seed=7)
    backward = assign_folds(ids[::-1], 3, seed=7)

    np.testing.assert_array_equal(forward, backward[::-1])


def test_cross_fitting_needs_two_folds() -> None:
    with pytest.raises(ValueError, match="at least 2 folds"):
        assign_folds(_ids(10), 1, seed=0)


def _write_unique_feature_world(path: Path, n: int) -> None:
    """Each event has its own user feature and a coin-flip reward: only memorising an event
    (i.e. having trained on it) can predict its reward."""
    rng = np.random.default_rng(0)
    with path.open("wb") as fh:
        for i in range(n):
            act = int(rng.integers(2))
            reward = float(rng.random() < 0.5)
            line = {
                "_label_cost": -reward,
                "_label_probability": 0.5,
                "_label_Action": act + 1,
                "_labelIndex": act,
                "EventId": f"u-{i}",
                "a": [act + 1, 2 - act],
                "p": [0.5, 0.5],
                "c": {
                    "user": {"uid": f"u{i}"},
                    "_multi": [{"ActionId": {"id": "a"}}, {"ActionId": {"id": "b"}}],
                },
            }
            fh.write(orjson.dumps(line) + b"\n")


def test_cross_fit_never_scores_an_event_with_a_model_trained_on_it(tmp_path: Path) -> None:
    data = tmp_path / "unique.dsjson"
    _write_unique_feature_world(data, 2000)
    logged, features, _ = read_events_and_features(data)

    model = fit_cross_fitted(logged, features, folds=5, seed=0, steps=300)
    cross_fit = model.dm_logged(logged.logged_action)
    # Fitted on every event (a "fold" of all but a dummy event), the same model memorises
    # each event's coin flip through its unique user token ...
    everything = fit_cross_fitted(logged, features, folds=2, seed=0, steps=300)
    assert everything.train_counts[0] + everything.train_counts[1] == logged.n

    # ... while the cross-fitted one knows nothing about an event's own coin flip.
    assert abs(np.corrcoef(cross_fit, logged.reward)[0, 1]) < 0.15
    sizes = np.bincount(model.fold, minlength=5)
    assert model.train_counts == tuple(int(logged.n - s) for s in sizes)


def test_reward_model_recovers_the_worlds_reward_probabilities(world: Any) -> None:
    logged = read_logged_events(world.eval)

    model = fit_reward_model(world.eval, folds=2, seed=0)

    sums = np.zeros((len(world.segments), len(world.actions)))
    counts = np.zeros_like(sums)
    with world.eval.open("rb") as fh:
        for i, line in enumerate(fh):
            c = orjson.loads(line)["c"]
            s = world.segments.index(c["user"]["segment"])
            for j, action in enumerate(c["_multi"]):
                a = world.actions.index(action["ActionId"]["id"])
                sums[s, a] += model.event_rewards(i)[j]
                counts[s, a] += 1
    means = sums / counts

    # Each prediction must land on its own _multi slot (the order is shuffled per event).
    assert np.corrcoef(means.ravel(), world.reward_prob.ravel())[0, 1] > 0.9
    assert np.abs(means - world.reward_prob).max() < 0.15
    assert model.predicted_reward.shape == (int(logged.n_actions.sum()),)


def test_reward_model_for_other_events_is_refused(world: Any, tmp_path: Path) -> None:
    other = tmp_path / "other.dsjson"
    with world.eval.open("rb") as src, other.open("wb") as dst:
        for _, line in zip(range(500), src, strict=False):
            dst.write(line)
    model = fit_reward_model(other, folds=2)

    with pytest.raises(RewardModelMismatch):
        model.check_matches(read_logged_events(world.eval))


def test_fewer_events_than_folds_still_cross_fits(tmp_path: Path) -> None:
    data = tmp_path / "tiny.dsjson"
    _write_unique_feature_world(data, 3)

    model = fit_reward_model(data, folds=5)

    assert model.n == 3
    assert model.predicted_reward.shape == (6,)
    assert np.isfinite(model.predicted_reward).all()
    assert sum(1 for c in model.train_counts if c == 3) == 5 - len(set(model.fold.tolist()))


def test_single_event_has_nothing_to_train_on_and_predicts_the_middle_of_the_range(
    tmp_path: Path,
) -> None:
    data = tmp_path / "one.dsjson"
    _write_unique_feature_world(data, 1)

    model = fit_reward_model(data, folds=2)

    np.testing.assert_array_equal(model.predicted_reward, [0.5, 0.5])
