"""Apprentice graduation through HTTP and the real loop, on seeded worlds with known answers.

The app's baseline is either a fixed action (worth 0.32; the bandit can learn 0.8) or the best
action of every segment (worth 0.8; no bandit beats it). Only the first graduates; with
epsilon 0 nothing ever does, and the reason says why.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
from modes_world import (
    ACTIONS,
    UNIFORM_VALUE,
    SettingsFactory,
    catalog,
    cycle,
    serve_round,
    world_settings,
)

from cbloop.settings import Settings
from cbloop_pipeline.graduation import effective_mode, graduation_of, latest_assessment
from cbloop_pipeline.report import experiment_report, render
from cbloop_pipeline.warehouse import connect

ROUNDS = 3
PER_ROUND = 500


def _fixed_baseline(segment: int) -> str:
    del segment
    return ACTIONS[0]


def _best_baseline(segment: int) -> str:
    return ACTIONS[segment]


def _run(settings: Settings, baseline: object, rounds: int = ROUNDS) -> list[str]:
    """Serve and cycle `rounds` times; the graduate step's detail of each cycle."""
    details = []
    for r in range(rounds):
        serve_round(settings, PER_ROUND, seed=1, tag=f"r{r}", baseline=baseline)  # type: ignore[arg-type]
        report = cycle(settings)
        details += [s.detail for s in report.steps if s.step == "graduate"]
        if details and details[-1].startswith("graduated"):
            break
    return details


def _warehouse(settings: Settings) -> duckdb.DuckDBPyConnection:
    return connect(settings.warehouse)


def test_an_apprentice_whose_bandit_is_truly_better_graduates_with_its_evidence(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = world_settings(
        make_settings,
        tmp_path / "better",
        mode="apprentice",
        apprentice={"epsilon": 0.5, "graduate": {"min_events": 150, "estimator": "dr"}},
    )
    details = _run(settings, _fixed_baseline)
    assert any(d.startswith("graduated to online") for d in details), details
    con = _warehouse(settings)
    try:
        graduation = graduation_of(con, "default")
        assert graduation is not None
        evidence = orjson.loads(graduation["evidence"])
        # The baseline (always a0) is worth 0.32 in this world; its estimate must be near it,
        # and the bandit's lower bound above it.
        assert abs(evidence["baseline_value"] - 0.32) < 0.12
        assert evidence["lower_bound"] > evidence["baseline_value"]
        assert evidence["n_events"] >= 150 and evidence["estimator"] == "dr"
        assert graduation["lower_bound"] == evidence["lower_bound"]
        assert effective_mode(con, "default", settings.experiment("default")) == "online"
        # A bandit that learned the world does not imitate a0 (best for one segment in 5).
        assert latest_assessment(con, "default")["imitation_rate"] < 0.5  # type: ignore[index]
        text = render(experiment_report(con, "default", "experiment"), "table", width=120)
        data = orjson.loads(render(experiment_report(con, "default", "experiment"), "json"))
    finally:
        con.close()
    assert "graduation: yes" in text and "imitates the baseline" in text
    assert data["apprentice"]["graduate"] is True
    assert data["apprentice"]["graduated_at"] is not None
    # The switch is the experiment's next version in the catalog, with the evidence: the
    # service serves it online from then on, and the loop no longer assesses it.
    record = catalog(settings).get("default")
    assert record.experiment().mode == "online" and record.by == "cbloop loop"
    assert record.evidence is not None and record.evidence["eval_id"] == evidence["eval_id"]
    assert "apprentice graduated" in record.why
    after = serve_round(settings, 100, seed=1, tag="after", baseline=_fixed_baseline)
    assert {a["mode"] for a in after.answers} == {"online"}
    assert not all(a["action_id"] == ACTIONS[0] for a in after.answers)
    again = cycle(settings)
    assert [s for s in again.steps if s.step == "graduate"] == []


def test_an_apprentice_whose_baseline_is_already_best_does_not_graduate(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = world_settings(
        make_settings,
        tmp_path / "worse",
        mode="apprentice",
        apprentice={"epsilon": 0.5, "graduate": {"min_events": 150}},
    )
    details = _run(settings, _best_baseline, rounds=2)
    assert details and not any(d.startswith("graduated") for d in details), details
    assert any("does not beat the baseline" in d for d in details), details
    con = _warehouse(settings)
    try:
        assert graduation_of(con, "default") is None
        assessment = latest_assessment(con, "default")
        assert assessment is not None
        # The baseline is the best action everywhere: worth 0.8, far above uniform.
        assert assessment["baseline_value"] > UNIFORM_VALUE + 0.25
        # A bandit that learned the world mostly agrees with the (optimal) baseline.
        assert assessment["imitation_rate"] > 0.6
        assert effective_mode(con, "default", settings.experiment("default")) == "apprentice"
    finally:
        con.close()


def test_an_apprentice_with_epsilon_zero_never_graduates_and_says_why(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = world_settings(
        make_settings,
        tmp_path / "eps0",
        mode="apprentice",
        apprentice={"epsilon": 0, "graduate": {"min_events": 10}},
    )
    details = _run(settings, _fixed_baseline, rounds=1)
    assert len(details) == 1
    assert "epsilon is 0" in details[0] and "never graduates" in details[0]
    con = _warehouse(settings)
    try:
        assert graduation_of(con, "default") is None
        assessment = latest_assessment(con, "default")
        assert assessment is not None and assessment["graduate"] is False
        # Every logged choice was the baseline with probability 1.
        assert con.execute(
            "SELECT count(*) FILTER (WHERE p_chosen <> 1), count(*) FROM decisions"
        ).fetchone() == (0, PER_ROUND)
    finally:
        con.close()
