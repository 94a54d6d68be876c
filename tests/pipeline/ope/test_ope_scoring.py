from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import vowpalwabbit

from cbloop_pipeline.ope.logged import read_logged_events
from cbloop_pipeline.ope.scoring import ScoringError, score_file, score_file_per_example
from cbloop_pipeline.ope.vw_io import PredictionMismatch, VWRunError, parse_action_values

WriteLines = Callable[[list[dict[str, Any] | bytes]], Path]


@pytest.fixture(scope="module")
def subset(world: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 3000 eval lines, with blank lines sprinkled in (VW and reader skip them)."""
    path = tmp_path_factory.mktemp("ope-scoring") / "subset.dsjson"
    with world.eval.open("rb") as src, path.open("wb") as dst:
        for i, line in enumerate(itertools.islice(src, 3000)):
            dst.write(line)
            if i % 997 == 0:
                dst.write(b"\n")
    return path


def _predict_each_line(model: Path, args: str, data: Path) -> list[list[float]]:
    ws = vowpalwabbit.Workspace(
        arg_list=[*args.split(), "--dsjson", "-t", "--quiet", "-i", str(model)]
    )
    try:
        with data.open() as fh:
            return [list(ws.predict(line)) for line in fh if line.strip()]
    finally:
        ws.finish()


def test_native_pmfs_match_ws_predict_line_by_line(world: Any, subset: Path) -> None:
    expected = _predict_each_line(world.model, world.args, subset)

    scores = score_file(subset, world.model, world.args)

    assert scores.n == len(expected) == 3000
    for i in range(scores.n):
        # VW prints 6 significant digits; ws.predict returns float32 values.
        np.testing.assert_allclose(scores.event_pmf(i), expected[i], rtol=1e-5, atol=1e-6)


def test_target_probability_is_the_pmf_at_the_logged_action(world: Any, subset: Path) -> None:
    logged = read_logged_events(subset)

    scores = score_file(subset, world.model, world.args, logged=logged)

    for i in range(0, logged.n, 37):
        pmf = scores.event_pmf(i)
        assert scores.target_probability[i] == pmf[logged.logged_action[i]]
        assert pmf.sum() == pytest.approx(1.0, abs=1e-5)


def test_per_example_reference_agrees_with_native(world: Any, subset: Path) -> None:
    native = score_file(subset, world.model, world.args)
    loop = score_file_per_example(subset, world.model, world.args)

    np.testing.assert_array_equal(native.offsets, loop.offsets)
    np.testing.assert_allclose(native.pmf, loop.pmf, rtol=1e-5, atol=1e-6)


def test_pmf_follows_multi_order_not_action_ids(
    world: Any, line_dict: dict[str, Any], write_lines: WriteLines
) -> None:
    reversed_line = orjson.loads(orjson.dumps(line_dict))
    reversed_line["c"]["_multi"] = list(reversed(line_dict["c"]["_multi"]))
    reversed_line["_label_Action"] = 2
    reversed_line["_labelIndex"] = 1
    path = write_lines([line_dict, reversed_line])

    scores = score_file(path, world.model, world.args)

    np.testing.assert_allclose(scores.event_pmf(1), scores.event_pmf(0)[::-1], atol=1e-6)


def test_model_that_is_not_an_exploration_policy_is_refused(
    world: Any, subset: Path, tmp_path: Path
) -> None:
    regressor = tmp_path / "regressor.vw"
    args = ["--cb_adf", "--dsjson", "--quiet", "-d", str(subset), "-f", str(regressor)]
    vowpalwabbit.Workspace(arg_list=args).finish()

    # cb_adf without exploration prints one action per example, not a pmf.
    with pytest.raises(ScoringError):
        score_file(subset, regressor, "--cb_adf")


def test_unknown_vw_argument_is_a_vw_run_error(world: Any, subset: Path) -> None:
    with pytest.raises(VWRunError, match="no_such_flag"):
        score_file(subset, world.model, f"{world.args} --no_such_flag")


def test_missing_model_is_a_vw_run_error(world: Any, subset: Path, tmp_path: Path) -> None:
    with pytest.raises(VWRunError):
        score_file(subset, tmp_path / "absent.vw", world.args)


def test_parse_action_values_scatters_by_action_index() -> None:
    text = "1:0.7,0:0.2,2:0.1\n\n0:1\n\n"

    out = parse_action_values(text, np.array([3, 1]))

    np.testing.assert_allclose(out, [0.2, 0.7, 0.1, 1.0])


@pytest.mark.parametrize(
    ("text", "n_actions", "message"),
    [
        ("0:0.5,1:0.5\n\n", [2, 2], "1 predictions for 2 events"),
        ("0:0.5,1:0.5\n\n0:1\n\n", [2, 2], "event 1: VW scored 1 actions"),
        ("0:0.5,0:0.5\n\n", [2], "repeated action index"),
        ("0:0.5,2:0.5\n\n", [2], "out of range"),
        ("0:0.5,x:0.5\n\n", [2], "unreadable"),
    ],
)
def test_parse_action_values_rejects_misaligned_predictions(
    text: str, n_actions: list[int], message: str
) -> None:
    with pytest.raises(PredictionMismatch, match=message):
        parse_action_values(text, np.array(n_actions, dtype=np.int64))
