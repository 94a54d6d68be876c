"""Load closed event-log segments into the warehouse, each line exactly once.

Closed segments never change, so "loaded" is a property of a segment key. A batch of new
segments is loaded in one transaction that also records them in `ingested_segments`: a crash
before the commit leaves no trace, a crash after it leaves nothing to redo, and the unique key
makes a double load impossible.

Each batch is one `INSERT ... SELECT` per kind over all of the batch's files; every line is
checked against the event contract in SQL (cbloop_pipeline.validate), which also extracts the
columns; no line goes through Python.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from cbloop.clock import utcnow_naive
from cbloop.eventlog.layout import KINDS, Kind, is_closed_segment, kind_prefix
from cbloop.storage import ObjectInfo, ObjectStore, StorageError
from cbloop_pipeline.segments import FileSet, SegmentSource, scan_groups
from cbloop_pipeline.validate import checked_sql

logger = logging.getLogger(__name__)

#: One transaction's worth of segment bytes: big enough to amortise the per-statement cost,
#: small enough that a huge backlog commits progress as it goes.
DEFAULT_BATCH_BYTES = 2 << 30
_LIST_ATTEMPTS = 3

# Rows failing these are not decisions/outcomes the join could use; they are moved to
# rejected_lines in the same transaction.
_DECISION_VALID = (
    "event_id IS NOT NULL AND ts IS NOT NULL AND experiment IS NOT NULL "
    "AND n_actions IS NOT NULL AND chosen_action BETWEEN 1 AND n_actions "
    "AND p_chosen > 0 AND p_chosen <= 1 AND sample_prob IS NOT NULL"
)
_OUTCOME_VALID = (
    "event_id IS NOT NULL AND ts IS NOT NULL "
    "AND (kind = 'activate' OR (kind = 'reward' AND value IS NOT NULL))"
)
_VALID: dict[Kind, str] = {"decisions": _DECISION_VALID, "outcomes": _OUTCOME_VALID}
# A line the contract rules pass but the columns' own checks still refuse (never seen so far).
_INCOMPLETE = "fields missing or of the wrong type"


@dataclass(frozen=True)
class IngestResult:
    batches: int = 0
    segments: int = 0
    decision_lines: int = 0
    outcome_lines: int = 0
    rejected_lines: int = 0

    def __add__(self, other: IngestResult) -> IngestResult:
        return IngestResult(
            self.batches + other.batches,
            self.segments + other.segments,
            self.decision_lines + other.decision_lines,
            self.outcome_lines + other.outcome_lines,
            self.rejected_lines + other.rejected_lines,
        )


@dataclass(frozen=True)
class PendingSegment:
    kind: Kind
    info: ObjectInfo


def ingest(
    con: duckdb.DuckDBPyConnection,
    store: ObjectStore,
    *,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
    cache_dir: Path | None = None,
) -> IngestResult:
    """Load every closed decision and outcome segment of `store` not loaded yet.

    Segments of a remote store are downloaded to `cache_dir` (default: beside the warehouse
    file) and kept there: the join's export reads the decision lines from them.
    """
    source = SegmentSource.beside(store, con, cache_dir)
    total = IngestResult()
    for batch in _batches(pending_segments(con, store), batch_bytes):
        total += _load_batch(con, source, batch)
    logger.info(
        "ingest done",
        extra={
            "segments": total.segments,
            "decision_lines": total.decision_lines,
            "outcome_lines": total.outcome_lines,
            "rejected_lines": total.rejected_lines,
        },
    )
    return total


def pending_segments(con: duckdb.DuckDBPyConnection, store: ObjectStore) -> list[PendingSegment]:
    """Closed segments not in `ingested_segments`, decisions first, each kind in key order."""
    loaded = {str(k) for (k,) in con.execute("SELECT key FROM ingested_segments").fetchall()}
    return [
        PendingSegment(kind, info)
        for kind in KINDS
        for info in _list_closed(store, kind)
        if info.key not in loaded
    ]


def _list_closed(store: ObjectStore, kind: Kind) -> list[ObjectInfo]:
    # A local listing walks a folder in which the service renames files; one can vanish
    # between being seen and being stat'ed. A fresh listing sees its new name.
    for attempt in range(_LIST_ATTEMPTS):
        try:
            infos = store.list(kind_prefix(kind))
            break
        except StorageError:
            if attempt == _LIST_ATTEMPTS - 1:
                raise
    return sorted((i for i in infos if is_closed_segment(i.key)), key=lambda i: i.key)


def _batches(segments: Sequence[PendingSegment], limit: int) -> Iterator[list[PendingSegment]]:
    batch: list[PendingSegment] = []
    size = 0
    for seg in segments:
        if batch and size + seg.info.size > limit:
            yield batch
            batch, size = [], 0
        batch.append(seg)
        size += seg.info.size
    if batch:
        yield batch


def _load_batch(
    con: duckdb.DuckDBPyConnection, source: SegmentSource, batch: list[PendingSegment]
) -> IngestResult:
    started = utcnow_naive()
    with source.readable([seg.info.key for seg in batch]) as paths:
        con.begin()
        try:
            result = _insert_batch(con, batch, paths, started)
            con.commit()
        except BaseException:
            con.rollback()
            raise
    logger.info(
        "ingest batch committed",
        extra={
            "segments": result.segments,
            "decision_lines": result.decision_lines,
            "outcome_lines": result.outcome_lines,
            "rejected_lines": result.rejected_lines,
        },
    )
    return result


def _insert_batch(
    con: duckdb.DuckDBPyConnection,
    batch: list[PendingSegment],
    paths: list[str],
    started: datetime,
) -> IngestResult:
    batch_id = _next_id(con, "ingest_batches", "batch_id")
    first_segment = _next_id(con, "ingested_segments", "segment_id")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _batch_segments ("
        "segment_id INTEGER, key VARCHAR, kind VARCHAR, size_bytes BIGINT)"
    )
    con.executemany(
        "INSERT INTO _batch_segments VALUES (?, ?, ?, ?)",
        [[first_segment + i, seg.info.key, seg.kind, seg.info.size] for i, seg in enumerate(batch)],
    )
    counts: dict[Kind, int] = {}
    rejected = 0
    groups = scan_groups(con)
    for kind in KINDS:
        chosen = [
            (first_segment + i, path)
            for i, (seg, path) in enumerate(zip(batch, paths, strict=True))
            if seg.kind == kind
        ]
        if chosen:
            files = FileSet.of([p for _, p in chosen], [sid for sid, _ in chosen], groups)
            _INSERTS[kind](con, batch_id, files)
            rejected += _move_rejected(con, kind, batch_id, chosen)
        counts[kind] = _scalar(
            con, f"SELECT count(*) FROM {kind} WHERE batch_id = $b", {"b": batch_id}
        )
    now = utcnow_naive()
    con.execute(
        """
        INSERT INTO ingested_segments
        SELECT s.segment_id, s.key, s.kind, $b, s.size_bytes,
               coalesce(l.n, 0), coalesce(r.n, 0), $now
        FROM _batch_segments s
        LEFT JOIN (
            SELECT segment_id, count(*) AS n FROM decisions WHERE batch_id = $b GROUP BY ALL
            UNION ALL
            SELECT segment_id, count(*) AS n FROM outcomes WHERE batch_id = $b GROUP BY ALL
        ) l USING (segment_id)
        LEFT JOIN (
            SELECT segment_id, count(*) AS n FROM rejected_lines WHERE batch_id = $b GROUP BY ALL
        ) r USING (segment_id)
        """,
        {"b": batch_id, "now": now},
    )
    con.execute(
        """
        INSERT INTO experiments (name)
        SELECT DISTINCT experiment FROM decisions WHERE batch_id = $b
        ON CONFLICT DO NOTHING
        """,
        {"b": batch_id},
    )
    result = IngestResult(
        batches=1,
        segments=len(batch),
        decision_lines=counts["decisions"],
        outcome_lines=counts["outcomes"],
        rejected_lines=rejected,
    )
    con.execute(
        "INSERT INTO ingest_batches VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            batch_id,
            started,
            now,
            result.segments,
            result.decision_lines,
            result.outcome_lines,
            result.rejected_lines,
        ],
    )
    con.execute("DROP TABLE _batch_segments")
    return result


# Timestamps parse as TIMESTAMPTZ so that an offset is honoured; timezone('UTC', ...) then
# gives the UTC wall time the warehouse stores, whatever the session's time zone.
_DECISION_SHAPE = (
    '{"EventId":"VARCHAR","Timestamp":"TIMESTAMPTZ","experiment":"VARCHAR",'
    '"model_id":"VARCHAR","a":"BIGINT[]","p":"DOUBLE[]","sample_prob":"DOUBLE",'
    '"deferred":"BOOLEAN","action_ids":"VARCHAR[]","mode":"VARCHAR","holdout":"BOOLEAN",'
    '"unit_id":"VARCHAR","holdout_share":"DOUBLE","baseline_action":"VARCHAR"}'
)
_OUTCOME_SHAPE = (
    '{"EventId":"VARCHAR","Timestamp":"TIMESTAMPTZ","kind":"VARCHAR","value":"DOUBLE",'
    '"idempotency_key":"VARCHAR"}'
)


def _insert_decisions(con: duckdb.DuckDBPyConnection, batch_id: int, files: FileSet) -> None:
    # A line breaking the event contract gets no event id, so the validity predicate moves
    # it to the quarantine (_move_rejected), where its reason is recorded. (The export
    # splices labels in after a line's first byte, which the contract makes '{'.)
    lines = (
        f"(SELECT segment_id, line_no, line, try(json_transform(line, '{_DECISION_SHAPE}')) AS j "
        f"FROM {files.lines_sql()})"
    )
    con.execute(
        f"""
        INSERT INTO decisions
        SELECT
            $b, segment_id, line_no,
            CASE WHEN reject_reason IS NULL THEN j.EventId END,
            timezone('UTC', j.Timestamp), j.experiment, j.model_id,
            j.a[1], j.p[1], list_max(j.p),
            CASE WHEN len(j.a) = len(j.p) THEN len(j.a) END,
            j.sample_prob, coalesce(j.deferred, false),
            coalesce(j.mode, 'online'), coalesce(j.holdout, false),
            coalesce(j.unit_id, j.EventId), coalesce(j.holdout_share, 0.0),
            coalesce(list_position(j.action_ids, j.baseline_action), 1)
        FROM {checked_sql("decisions", lines)}
        """,
        {"b": batch_id, **files.params},
    )


def _insert_outcomes(con: duckdb.DuckDBPyConnection, batch_id: int, files: FileSet) -> None:
    lines = (
        f"(SELECT segment_id, line_no, line, try(json_transform(line, '{_OUTCOME_SHAPE}')) AS j "
        f"FROM {files.lines_sql()})"
    )
    con.execute(
        f"""
        INSERT INTO outcomes
        SELECT $b, segment_id, line_no,
               CASE WHEN reject_reason IS NULL THEN j.EventId END,
               timezone('UTC', j.Timestamp), j.kind, j.value, j.idempotency_key
        FROM {checked_sql("outcomes", lines)}
        """,
        {"b": batch_id, **files.params},
    )


_INSERTS = {"decisions": _insert_decisions, "outcomes": _insert_outcomes}


def _move_rejected(
    con: duckdb.DuckDBPyConnection, kind: Kind, batch_id: int, files: list[tuple[int, str]]
) -> int:
    """Move this batch's unusable rows of `kind` to rejected_lines; returns how many."""
    bad = f"batch_id = $b AND NOT coalesce({_VALID[kind]}, false)"
    count = _scalar(con, f"SELECT count(*) FROM {kind} WHERE {bad}", {"b": batch_id})
    if not count:
        return 0
    # Rows do not keep their text, so the few segments with bad lines are read again.
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _bad AS
        SELECT DISTINCT segment_id, line_no FROM {kind} WHERE {bad}
        """,
        {"b": batch_id},
    )
    bad_segments = {int(sid) for (sid,) in con.execute("SELECT segment_id FROM _bad").fetchall()}
    again = [(sid, path) for sid, path in files if sid in bad_segments]
    reread = FileSet.of([p for _, p in again], [sid for sid, _ in again], groups=1)
    bad_lines = (
        f"(SELECT l.segment_id, l.line_no, l.line FROM {reread.lines_sql()} l "
        "SEMI JOIN _bad USING (segment_id, line_no))"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _bad_lines AS
        SELECT segment_id, line_no, line, coalesce(reject_reason, '{_INCOMPLETE}') AS reason
        FROM {checked_sql(kind, bad_lines)}
        """,
        reread.params,
    )
    con.execute(
        "INSERT INTO rejected_lines SELECT segment_id, line_no, $b, line FROM _bad_lines",
        {"b": batch_id},
    )
    con.execute(
        "INSERT INTO quarantine_reasons SELECT segment_id, line_no, $b, $kind, reason "
        "FROM _bad_lines",
        {"b": batch_id, "kind": kind},
    )
    con.execute("DROP TABLE _bad_lines")
    con.execute(f"DELETE FROM {kind} WHERE {bad}", {"b": batch_id})
    con.execute("DROP TABLE _bad")
    logger.warning(
        "rejected unusable lines", extra={"kind": kind, "batch_id": batch_id, "lines": count}
    )
    return count


def _next_id(con: duckdb.DuckDBPyConnection, table: str, column: str) -> int:
    return _scalar(con, f"SELECT coalesce(max({column}), 0) + 1 FROM {table}")


def _scalar(
    con: duckdb.DuckDBPyConnection, sql: str, params: dict[str, object] | None = None
) -> int:
    row = con.execute(sql, params).fetchone()
    # Callers only pass aggregates, which always yield one row.
    assert row is not None
    return int(row[0])
