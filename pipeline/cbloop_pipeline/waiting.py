"""Why an experiment has not learned (more) yet: what the next cycles are waiting for.

Three things hold learning back on a young deployment, and each has a time or a count:
decisions whose reward window is still open (they join at decision time + wait_seconds),
segments the service still has open (the pipeline sees their lines only once the writer
rotates them, segment_max_seconds after it opened them), and too few evaluation events for
the promotion rule (promotion.min_events).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import orjson

from cbloop import clock
from cbloop.eventlog.layout import KINDS, OPEN_SUFFIX
from cbloop.settings import Settings
from cbloop_pipeline.join_catalog import finished_joins

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenSegments:
    """`.open` segment files in the local spool: lines the pipeline cannot see yet."""

    files: int
    decisions: int
    outcomes: int
    #: When the last of them is due to rotate (naive UTC); None when there are none.
    closes_by: datetime | None


@dataclass(frozen=True)
class Waiting:
    experiment: str
    #: Decisions ingested but not joined because their reward window is still open.
    in_window: int
    window_wait_seconds: float
    first_window_closes: datetime | None
    last_window_closes: datetime | None
    open_segments: OpenSegments
    segment_max_seconds: float
    eval_events: int
    min_events: int
    #: Decisions of the experiment in the warehouse, joined or not.
    decisions: int = 0

    @property
    def eval_short(self) -> int:
        return max(0, self.min_events - self.eval_events)

    def lines(self) -> list[str]:
        """What a person reads: one line per reason that applies."""
        out = []
        if not self.decisions and not self.open_segments.decisions:
            out.append(f"no decisions of experiment {self.experiment} logged yet")
        if self.in_window:
            out.append(
                f"{self.in_window} decision(s) wait for their reward window "
                f"(reward.wait_seconds={self.window_wait_seconds:g}): the first closes at "
                f"{_at(self.first_window_closes)}, the last at {_at(self.last_window_closes)}"
            )
        seg = self.open_segments
        if seg.files:
            out.append(
                f"{seg.files} segment(s) still open in the spool with {seg.decisions} "
                f"decision(s) and {seg.outcomes} outcome(s), closed by about "
                f"{_at(seg.closes_by)} (eventlog.segment_max_seconds="
                f"{self.segment_max_seconds:g}) or when the service stops"
            )
        if self.eval_short:
            out.append(
                f"{self.eval_events} joined eval event(s), {self.eval_short} short of "
                f"promotion.min_events={self.min_events}"
            )
        return out


def _at(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}Z"


def waiting(
    con: duckdb.DuckDBPyConnection, settings: Settings, name: str, *, now: datetime | None = None
) -> Waiting:
    experiment = settings.experiment(name)
    wait = experiment.reward.wait_seconds
    moment = clock.to_naive_utc(clock.now() if now is None else now)
    # Not examined by any join yet, and the window has not closed by now: the next join
    # cannot take them either (decisions whose window closed join at the next cycle).
    row = con.execute(
        """
        WITH marks AS (
            SELECT max(decision_ts_hi) AS ts_hi FROM join_jobs WHERE experiment = $x
        )
        SELECT count(DISTINCT event_id), min(ts), max(ts)
        FROM decisions, marks
        WHERE experiment = $x AND (marks.ts_hi IS NULL OR ts > marks.ts_hi)
          AND ts + to_microseconds(CAST($w * 1e6 AS BIGINT)) > $now
          AND NOT EXISTS (
              SELECT 1 FROM joined_events j
              WHERE j.experiment = $x AND j.event_id = decisions.event_id
          )
        """,
        {"x": name, "w": wait, "now": moment},
    ).fetchone()
    total = con.execute(
        "SELECT count(DISTINCT event_id) FROM decisions WHERE experiment = ?", [name]
    ).fetchone()
    assert row is not None and total is not None  # aggregates always yield a row
    span = timedelta(seconds=wait)
    joins = [j for j in finished_joins(con, name) if j.eval_events > 0]
    recent = experiment.evaluation.recent_joins
    if recent is not None:
        joins = joins[-recent:]
    return Waiting(
        experiment=name,
        in_window=int(row[0]),
        window_wait_seconds=wait,
        first_window_closes=row[1] + span if row[1] is not None else None,
        last_window_closes=row[2] + span if row[2] is not None else None,
        open_segments=open_segments(settings.storage.root, settings.eventlog.segment_max_seconds),
        segment_max_seconds=settings.eventlog.segment_max_seconds,
        eval_events=sum(j.eval_events for j in joins),
        min_events=experiment.promotion.min_events,
        decisions=int(total[0]),
    )


def open_segments(root: Path, max_seconds: float) -> OpenSegments:
    """Count the open segments under `root`/events and when they are due to rotate.

    A writer opens a segment on its first line, so that line's Timestamp is (to within
    microseconds) when the segment opened; the file's mtime stands in when it has no line.
    """
    files = 0
    lines = {kind: 0 for kind in KINDS}
    closes: list[datetime] = []
    for kind in KINDS:
        folder = root / "events" / kind
        if not folder.is_dir():
            continue
        for path in folder.rglob(f"*{OPEN_SUFFIX}"):
            try:
                data = path.read_bytes()
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                continue  # rotated while we looked
            files += 1
            # Only whole lines count: the last one may still be being written.
            lines[kind] += data.count(b"\n")
            opened = _first_timestamp(data) or clock.to_naive_utc(
                datetime.fromtimestamp(mtime, clock.now().tzinfo)
            )
            closes.append(opened + timedelta(seconds=max_seconds))
    return OpenSegments(files, lines["decisions"], lines["outcomes"], max(closes, default=None))


def _first_timestamp(data: bytes) -> datetime | None:
    first = data.split(b"\n", 1)[0]
    try:
        record = orjson.loads(first)
        return clock.to_naive_utc(clock.parse_ts(str(record["Timestamp"])))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
