"""Health warnings are computed from the data: faults written into a copy of a simulated
warehouse raise exactly the warnings they should, and the healthy run raises none of them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest
from dashboard_helpers import Simulated

from cbloop.clock import utcnow_naive
from cbloop.settings import Settings
from cbloop_pipeline.dashboard import health, queries
from cbloop_pipeline.dashboard.snapshot import publish

# The first test of a session also runs the seeded simulation (about a minute or two).
pytestmark = pytest.mark.timeout(600)

FAULTS = {
    "loop_failing",
    "propensity_out_of_range",
    "propensity_tiny",
    "ess_collapsing",
    "reward_shift",
    "segments_waiting_to_ingest",
}


def _codes(snapshot: Path, settings: Settings) -> dict[str, health.HealthWarning]:
    with duckdb.connect(str(snapshot), read_only=True) as con:
        found = health.check(
            con, "default", now=utcnow_naive(), loop_period=300.0, holdout_share=None
        )
    return {w.code: w for w in found}


@pytest.fixture
def copied(simulated: Simulated, make_settings: Callable[..., Settings]) -> Settings:
    settings = make_settings()
    settings.warehouse.path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(simulated.settings.warehouse.path, settings.warehouse.path)
    return settings


def test_a_healthy_run_raises_none_of_the_fault_warnings(copied: Settings) -> None:
    found = _codes(publish(copied), copied)
    # ess_collapsing is left out: since the service's injective feature escaping landed, the
    # seeded run's last evaluation (58 events) honestly has an ESS under 10%, which the rule
    # reports; the fault test below still shows the rule fires on a collapsed ESS.
    assert not (set(found) & (FAULTS - {"reward_shift", "ess_collapsing"}))
    # learning makes the reward rise; a rise is news, never an alarm
    assert all(w.level == "info" for w in found.values() if w.code == "reward_shift")


def test_faults_in_the_warehouse_raise_their_warnings(copied: Settings) -> None:
    with duckdb.connect(str(copied.warehouse.path)) as con:
        con.execute(
            "UPDATE experiment_state SET status = 'failed', step = 'train', "
            "last_error = 'vw exploded'"
        )
        last = con.execute("SELECT max(ts), max(batch_id) FROM decisions").fetchone()
        assert last is not None
        # 300 decisions over the next 30 minutes, all with reward 0 and tiny propensities,
        # one with a probability of 0.
        con.execute(
            """
            INSERT INTO decisions (batch_id, segment_id, line_no, event_id, ts, experiment,
                                   model_id, chosen_action, p_chosen, p_max, n_actions,
                                   sample_prob, deferred)
            SELECT ?, 999, i, 'fault-' || i, ?::TIMESTAMP + to_seconds(i * 6), 'default',
                   'm-fault', 1, CASE WHEN i = 0 THEN 0.0 ELSE 0.00001 END, 0.9, 3, 0.5, false
            FROM range(300) t(i)
            """,
            [last[1], last[0]],
        )
        con.execute(
            """
            INSERT INTO joined_events
            SELECT 999, 'default', 'fault-' || i, ?::TIMESTAMP + to_seconds(i * 6),
                   'defaulted', 0.0, 0, 'train'
            FROM range(300) t(i)
            """,
            [last[0]],
        )
        con.execute(
            """
            INSERT INTO evaluations
            SELECT 'ev-fault', 'default', 'm-fault', NULL, ?::TIMESTAMP + INTERVAL 1 HOUR, [],
                   1000, 0.95, 'dr', 12.0, 900.0, 1.0, 'k', 'k'
            """,
            [last[0]],
        )
    segment = copied.storage.root / "events/decisions/date=2026-01-01/hour=00/w-1-000001.jsonl"
    segment.parent.mkdir(parents=True)
    segment.write_text("{}\n")

    found = _codes(publish(copied), copied)
    assert set(found) >= FAULTS
    assert found["loop_failing"].level == "error" and "vw exploded" in found["loop_failing"].message
    assert found["propensity_out_of_range"].message.startswith("1 decisions")
    assert "299 decisions" in found["propensity_tiny"].message
    assert "12 of 1000" in found["ess_collapsing"].message
    assert found["reward_shift"].level == "warning" and "fell" in found["reward_shift"].message
    assert found["segments_waiting_to_ingest"].message.startswith("1 closed segments")
    # most severe first
    levels = [w.level for w in found.values()]
    assert levels == sorted(levels, key=["error", "warning", "info"].index)


def test_holdout_lift_is_the_policy_mean_minus_the_holdout_mean(copied: Settings) -> None:
    with duckdb.connect(str(copied.warehouse.path)) as con:
        # The column is migration 0040's; the test marks every fifth event as held out.
        con.execute("UPDATE decisions SET holdout = hash(event_id) % 5 = 0")
        expected = con.execute(
            """
            SELECT avg(j.reward) FILTER (WHERE NOT d.holdout)
                 - avg(j.reward) FILTER (WHERE d.holdout),
                   avg(d.holdout::INT)
            FROM decisions d JOIN joined_events j USING (experiment, event_id)
            """
        ).fetchone()
    assert expected is not None
    with duckdb.connect(str(publish(copied)), read_only=True) as con:
        lift = queries.holdout(con, "default")
    assert lift["configured"] is True
    assert lift["lift"] == pytest.approx(expected[0])
    assert lift["lift_low"] < lift["lift"] < lift["lift_high"]
    assert lift["holdout_share"] == pytest.approx(expected[1], abs=0.01)
