"""`cbloop ingest`: closed segments into the warehouse, every line exactly once."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from crafted_segments import EventLogFolder, Pipeline, at, decision, reward
from typer.testing import CliRunner

from cbloop_cli.main import app


def test_loads_the_lines_of_closed_segments_and_ignores_open_ones(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    closed = event_log.decisions(decision("e1", 0), decision("e2", 1))
    event_log.decisions(decision("e3", 2), closed=False)  # still being written
    event_log.outcomes(reward("e1", 5, 1.0))

    result = wh.ingest()

    assert (result.segments, result.decision_lines, result.outcome_lines) == (2, 2, 1)
    assert wh.query("SELECT event_id, ts, line_no FROM decisions ORDER BY event_id") == [
        ("e1", at(0), 1),
        ("e2", at(1), 2),
    ]
    key = closed.relative_to(wh.settings.storage.root).as_posix()
    assert wh.query(
        "SELECT kind, lines, rejected_lines FROM ingested_segments WHERE key = ?", [key]
    ) == [("decisions", 2, 0)]


def test_extracts_what_the_join_needs_from_a_decision_line(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(
        decision(
            "e1",
            0,
            chosen=2,
            n_actions=4,
            p_chosen=0.1,
            sample_prob=0.42,
            deferred=True,
            experiment="exp-a",
            model_id="m-7",
        )
    )
    wh.ingest()

    assert wh.query(
        "SELECT experiment, model_id, chosen_action, p_chosen, p_max, n_actions, sample_prob, "
        "deferred FROM decisions"
    ) == [("exp-a", "m-7", 3, 0.1, 0.3, 4, 0.42, True)]
    assert wh.query("SELECT name, state FROM experiments") == [("exp-a", "active")]


def test_timestamps_are_stored_as_utc_whatever_offset_they_carry(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(
        decision("z", 0),
        decision("offset", 0).replace("12:00:00.000000Z", "14:00:00.000000+02:00"),
    )
    wh.ingest()

    assert wh.query("SELECT event_id, ts FROM decisions ORDER BY 1") == [
        ("offset", at(0)),
        ("z", at(0)),
    ]


def test_running_twice_loads_each_line_once_and_picks_up_new_segments(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(decision("e1", 0))
    event_log.outcomes(reward("e1", 5, 1.0))
    first = wh.ingest()
    again = wh.ingest()
    event_log.decisions(decision("e2", 10))
    later = wh.ingest()

    assert (first.segments, again.segments, later.segments) == (2, 0, 1)
    assert wh.query("SELECT count(*) FROM decisions") == [(2,)]
    assert wh.query("SELECT count(*) FROM outcomes") == [(1,)]
    assert wh.query("SELECT batch_id, segments FROM ingest_batches ORDER BY 1") == [(1, 2), (2, 1)]


def test_a_large_backlog_is_loaded_in_several_transactions(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    for i in range(5):
        event_log.decisions(decision(f"e{i}", i))

    result = wh.ingest(batch_bytes=1)  # every segment is its own batch

    assert (result.batches, result.segments, result.decision_lines) == (5, 5, 5)
    assert wh.query("SELECT count(DISTINCT batch_id), count(*) FROM decisions") == [(5, 5)]


def test_unusable_lines_are_kept_verbatim_in_rejected_lines(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    good = decision("good", 0)
    bad_lines = [
        '{"EventId": "torn", "Timest',  # not JSON
        decision("zero-p", 0, p_chosen=0.0),  # a chosen action cannot have probability 0
        '{"Timestamp": "2026-11-22T12:00:00.000000Z"}',  # no event id
        "   ",
    ]
    segment = event_log.decisions(good, *bad_lines)
    event_log.outcomes(reward("good", 1, 1.0), '{"EventId": "good", "kind": "reward"}')

    result = wh.ingest()

    assert (result.decision_lines, result.outcome_lines, result.rejected_lines) == (1, 1, 5)
    rejected = wh.query(
        "SELECT line_no, line FROM rejected_lines ORDER BY batch_id, segment_id, line_no"
    )
    assert rejected == [
        (2, bad_lines[0]),
        (3, bad_lines[1]),
        (4, bad_lines[2]),
        (5, bad_lines[3]),
        (2, '{"EventId": "good", "kind": "reward"}'),
    ]
    key = segment.relative_to(wh.settings.storage.root).as_posix()
    assert wh.query("SELECT lines, rejected_lines FROM ingested_segments WHERE key = ?", [key]) == [
        (1, 4)
    ]


def test_line_numbers_count_blank_lines_so_they_point_into_the_file(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    path = event_log.decisions(decision("e1", 0))
    path.write_text(decision("e1", 0) + "\n\n" + decision("e2", 0) + "\n", encoding="utf-8")

    wh.ingest()

    assert wh.query("SELECT event_id, line_no FROM decisions ORDER BY 1") == [("e1", 1), ("e2", 3)]


_CRASH_IN_THE_MIDDLE = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from cbloop.settings import load_settings
    from cbloop.storage import open_store
    from cbloop_pipeline.ingest import ingest
    from cbloop_pipeline.warehouse import connect

    class DiesAfterDecisions:
        '''The real connection; the process dies once the decisions are inserted.'''
        def __init__(self, con):
            self.con = con
        def execute(self, sql, *args):
            result = self.con.execute(sql, *args)
            if sql.lstrip().startswith("INSERT INTO decisions"):
                os._exit(86)
            return result
        def __getattr__(self, name):
            return getattr(self.con, name)

    settings = load_settings(Path(sys.argv[1]), env={})
    con = connect(settings.warehouse)
    ingest(DiesAfterDecisions(con), open_store(settings.storage))
    """
)


def test_after_a_crash_halfway_the_next_run_loads_each_line_exactly_once(
    wh: Pipeline, event_log: EventLogFolder, tmp_path: Path
) -> None:
    event_log.decisions(decision("e1", 0), decision("e2", 0))
    event_log.outcomes(reward("e1", 5, 1.0))
    wh.ingest()  # one batch already in, so the crash hits a warehouse with history
    event_log.decisions(decision("e3", 0), decision("e4", 0))
    event_log.outcomes(reward("e3", 5, 1.0))

    crashed = subprocess.run(
        [sys.executable, "-c", _CRASH_IN_THE_MIDDLE, str(tmp_path / "config.yaml")],
        capture_output=True,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert crashed.returncode == 86, crashed.stderr.decode()

    assert wh.query("SELECT count(*) FROM decisions") == [(2,)]  # the crashed batch left nothing
    result = wh.ingest()
    assert (result.segments, result.decision_lines, result.outcome_lines) == (2, 2, 1)
    assert wh.query("SELECT event_id, count(*) FROM decisions GROUP BY 1 ORDER BY 1") == [
        ("e1", 1),
        ("e2", 1),
        ("e3", 1),
        ("e4", 1),
    ]
    assert wh.query("SELECT count(*) FROM outcomes") == [(2,)]


def test_ingest_and_migrate_commands(
    wh: Pipeline, event_log: EventLogFolder, tmp_path: Path
) -> None:
    event_log.decisions(decision("e1", 0), decision("e2", 0))
    event_log.outcomes(reward("e1", 5, 1.0))
    runner = CliRunner()
    config = str(tmp_path / "config.yaml")

    migrated = runner.invoke(app, ["migrate", "--config", config])
    ingested = runner.invoke(app, ["ingest", "--config", config])
    again = runner.invoke(app, ["ingest", "--config", config])

    assert migrated.exit_code == 0, migrated.output
    assert "0001_experiments" in migrated.output
    assert ingested.exit_code == 0, ingested.output
    assert "ingested 2 segments: 2 decisions, 1 outcomes, 0 rejected lines" in ingested.output
    assert "ingested 0 segments" in again.output
