"""Output files: summary.json, interactions.csv, summary.md and the two plots."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
import pytest

from cbloop.registry import ModelMetadata
from cbloop_pipeline.simulate import report
from cbloop_pipeline.simulate.ope import latest_estimate
from cbloop_pipeline.simulate.results import Interaction, LoopRecord, OpeEstimate, totals

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _interaction(loop: int, t: int, reward: float, online: float) -> Interaction:
    return Interaction(
        loop=loop,
        t=t,
        event_id=f"e{t}",
        model_id=f"m{loop}",
        action_id="a",
        probability=0.9,
        reward=reward,
        expected_reward=reward,
        oracle_reward=1.0,
        uniform_reward=0.25,
        best_fixed_reward=0.5,
        online_action_id="a",
        online_probability=0.9,
        online_reward=online,
    )


def _loops() -> tuple[list[LoopRecord], list[Interaction]]:
    interactions = [
        _interaction(1, 0, 0.0, 1.0),
        _interaction(1, 1, 1.0, 1.0),
        _interaction(2, 2, 1.0, 1.0),
        _interaction(2, 3, 1.0, 0.0),
    ]
    loops = [
        LoopRecord(1, 2, "m1", 0.5, 1.0, 0.25, 0.5, 1.0),
        LoopRecord(
            2,
            2,
            "m2",
            1.0,
            0.5,
            0.25,
            0.5,
            1.0,
            ope=OpeEstimate("dr", 0.9, 0.8, 1.0, events=40),
            covered=True,
            prediction_interval=(0.75, 1.05),
            consistent=True,
            deployed_after="m3",
        ),
    ]
    return loops, interactions


def test_totals_compare_the_system_with_the_baselines() -> None:
    loops, interactions = _loops()
    total = totals(loops, interactions, "a", last=1)
    assert total.interactions == 4
    assert total.system_mean_reward == pytest.approx(0.75)
    assert total.last_loops == 1
    assert total.last_loops_mean_reward == pytest.approx(1.0)
    assert total.online_vw_mean_reward == pytest.approx(0.75)
    assert total.system_vs_online == pytest.approx(1.0)
    assert (total.uniform, total.best_fixed, total.oracle) == (0.25, 0.5, 1.0)
    assert (total.ope_loops, total.ope_covered, total.ope_coverage) == (1, 1, 1.0)
    assert (total.ope_consistent, total.ope_consistency) == (1, 1.0)


def test_ope_interval_coverage_is_inclusive_and_unknown_without_bounds() -> None:
    assert OpeEstimate("dr", 0.5, 0.4, 0.6).covers(0.6) is True
    assert OpeEstimate("dr", 0.5, 0.4, 0.6).covers(0.61) is False
    assert OpeEstimate("dr", 0.5, None, None).covers(0.5) is None


def test_prediction_interval_adds_the_rounds_own_sampling_noise() -> None:
    estimate = OpeEstimate("dr", 0.5, 0.45, 0.55)
    band = estimate.prediction_interval(reward_sd=0.5, n=100)
    assert band is not None
    # se of the estimate = 0.05 / 1.96; noise of a 100-reward mean = 0.05.
    half = 1.959964 * ((0.05 / 1.959964) ** 2 + 0.05**2) ** 0.5
    assert band == pytest.approx((0.5 - half, 0.5 + half), abs=1e-5)
    assert estimate.prediction_interval(reward_sd=0.0, n=100) == pytest.approx((0.45, 0.55))
    assert OpeEstimate("dr", 0.5, None, None).prediction_interval(0.5, 100) is None


def test_outputs_are_written(tmp_path: Path) -> None:
    loops, interactions = _loops()
    summary: dict[str, Any] = {
        "loops": [r.to_json() for r in loops],
        "totals": totals(loops, interactions, "a").__dict__,
        "wall_seconds": 1.5,
    }
    written = report.write_summary(tmp_path, summary)
    assert orjson.loads(written.read_bytes())["loops"][1]["ope"]["ci_low"] == 0.8

    with report.write_interactions(tmp_path, interactions).open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4
    assert rows[3]["event_id"] == "e3"
    assert float(rows[3]["online_reward"]) == 0.0

    md = report.write_markdown(tmp_path, loops, summary).read_text()
    assert "| 2 | m2 | 1.000 | 0.500 | 0.900 [0.800, 1.000] | yes | yes |" in md
    assert "| 1 | m1 | 0.500 | 1.000 | n/a | n/a | n/a |" in md
    assert "1/1 loops (100%)" in md

    for path in (
        report.plot_reward_per_loop(tmp_path, loops, "t"),
        report.plot_ope_vs_realized(tmp_path, loops, "t"),
    ):
        assert path.read_bytes().startswith(PNG_MAGIC)


def _meta(model_id: str, records: list[dict[str, Any]]) -> ModelMetadata:
    return ModelMetadata(
        model_id=model_id,
        experiment="x",
        vw_args="--cb_explore_adf",
        created_at="2026-01-01T00:00:00Z",
        evaluations=records,
    )


def _record(created: str, candidate: str, deployed: str | None, value: float) -> dict[str, Any]:
    def est(v: float) -> dict[str, Any]:
        return {"dr": {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1, "n": 50}}

    return {
        "created_at": created,
        "primary_estimator": "dr",
        "joins": ["j1"],
        "policies": {
            "candidate": {"model_id": candidate, "estimates": est(value)},
            "deployed": {"model_id": deployed, "estimates": est(0.4)} if deployed else None,
        },
    }


def test_a_models_estimate_is_its_newest_evaluation_in_either_role() -> None:
    models = [
        _meta("m1", [_record("2026-01-01T00:00:01Z", "m1", None, 0.5)]),
        _meta("m2", [_record("2026-01-01T00:00:05Z", "m2", "m1", 0.7)]),
    ]
    # m1 was re-estimated as the deployed model when m2 was evaluated.
    newest = latest_estimate(models, "m1")
    assert newest is not None
    assert (newest.estimator, newest.value, newest.events) == ("dr", 0.4, 50)
    assert latest_estimate(models, "m1", before="2026-01-01T00:00:09Z") == newest
    only_first = latest_estimate(models, "m1", before="2026-01-01T00:00:03Z")
    assert only_first is not None
    assert only_first.value == pytest.approx(0.5)
    assert latest_estimate(models, "m2", before="2026-01-01T00:00:03Z") is None
    assert latest_estimate(models, "unknown") is None
