"""Ingest and join stay exact while the service's event log writes and rotates segments."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from crafted_segments import Pipeline, PipelineFactory

from cbloop.clock import format_ts
from cbloop.encoding import decision_line, outcome_line
from cbloop.eventlog import SegmentWriter
from cbloop.settings import EventLogSettings
from cbloop_pipeline.join import JoinResult

C_JSON = b'{"user":{"city":"paris"},"_multi":[{"ActionId":{"id":"x"}},{"ActionId":{"id":"y"}}]}'


def _write_traffic(pipeline: Pipeline, stop: threading.Event, counts: dict[str, int]) -> None:
    """A service's two writers: decisions, and a reward for every third one (some twice)."""
    # Tiny segments, rotated by age and size, so renames happen all through the test.
    log_settings = EventLogSettings(segment_max_seconds=0.02, segment_max_bytes=4096, fsync="never")
    root = pipeline.settings.storage.root
    decisions = SegmentWriter(root, "decisions", log_settings)
    outcomes = SegmentWriter(root, "outcomes", log_settings, writer_id=decisions.writer_id)
    decisions.start()
    outcomes.start()
    n = 0
    try:
        while not stop.is_set() or n < 300:
            event = f"e{n}"
            decisions.append(
                decision_line(
                    event_id=event,
                    ts=format_ts(),
                    order=[n % 2, 1 - n % 2],
                    probabilities=[0.5, 0.5],
                    c_json=C_JSON,
                    experiment="default",
                    model_id="m-1",
                    action_ids=["x", "y"],
                    sample_prob=(n % 10) / 10,
                    deferred=False,
                )
            )
            if n % 3 == 0:
                line = outcome_line(event_id=event, ts=format_ts(), kind="reward", value=1.0)
                outcomes.append(line)
                counts["rewards"] += 1
                if n % 9 == 0:  # delivered twice (same bytes): must count once
                    outcomes.append(line)
            n += 1
            if n % 25 == 0:
                time.sleep(0.005)
    finally:
        decisions.close()
        outcomes.close()
        counts["decisions"] = n


def test_every_line_is_loaded_once_and_every_decision_joined_once_while_segments_are_written(
    make_pipeline: PipelineFactory,
) -> None:
    # Short windows close within the run, so joins during the traffic emit events, and rewards
    # whose segments close later become late rewards, the case this test is about.
    wh = make_pipeline(wait_seconds=0.5, backward_seconds=2.0, aggregation="sum")
    stop = threading.Event()
    counts = {"decisions": 0, "rewards": 0}
    writer = threading.Thread(target=_write_traffic, args=(wh, stop, counts))
    writer.start()
    jobs: list[JoinResult] = []
    try:
        deadline = time.monotonic() + 2.0
        while len(jobs) < 4 or time.monotonic() < deadline:
            wh.ingest()
            jobs.append(wh.join(as_of=datetime.now(UTC)))
    finally:
        stop.set()
        writer.join(timeout=60)
    wh.ingest()
    jobs.append(wh.join(as_of=datetime.now(UTC) + timedelta(hours=1)))

    n, n_rewards = counts["decisions"], counts["rewards"]
    assert len(jobs) >= 3
    assert sum(j.joined for j in jobs[:-1]) > 0  # joins ran while the log was written
    # Ingest: every line exactly once.
    assert wh.query("SELECT count(*), count(DISTINCT event_id) FROM decisions") == [(n, n)]
    assert wh.query("SELECT count(*) FROM outcomes") == [(n_rewards + (n + 8) // 9,)]
    # Join: every decision decided by exactly one job and exported exactly once.
    assert wh.query("SELECT count(*), count(DISTINCT event_id) FROM joined_events") == [(n, n)]
    exported: list[str] = []
    for job in jobs:
        exported += [obj["EventId"] for obj in wh.exported(job.train_key)]
        exported += [obj["EventId"] for obj in wh.exported(job.eval_key)]
    assert sorted(exported) == sorted(f"e{i}" for i in range(n))
    # Rewards: each one learned once or recorded as unused (late or duplicate), none lost.
    [(used, late, duplicate, other)] = wh.query(
        "SELECT (SELECT sum(n_rewards) FROM joined_events), "
        "count(*) FILTER (WHERE reason IN ('after_join', 'after_window')), "
        "count(*) FILTER (WHERE reason = 'duplicate'), "
        "count(*) FILTER (WHERE reason NOT IN ('after_join', 'after_window', 'duplicate')) "
        "FROM unused_rewards"
    )
    assert used + late == n_rewards
    assert duplicate == (n + 8) // 9
    assert other == 0
    assert sum(j.late_rewards for j in jobs) == late
