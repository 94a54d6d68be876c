"""Retention: delete what the pipeline no longer needs once it is older than the settings allow.

Four kinds, each with its own `retention.*_days` (None: keep forever):

- segment: a closed event segment that every join has gone past. Decision segments are read
  again by the export until their lines are joined, so a segment counts as joined only when
  every decision line in it lies below its experiment's join watermarks (time and ingest
  batch), and every outcome line lies so far below every experiment's watermark that no
  decision it could belong to is still unjoined. Segments not yet ingested are never looked at.
- export: a join's train/eval files, once the newest model of the experiment has learned the
  join (or it had no training events). The join is then left out of training and evaluation.
- evaluation: an evaluation's files (per-event Parquet, summary, plot); the warehouse keeps its
  figures.
- model: the file of a model that is not served. The served model, the one the pointer names,
  the one before it (the rollback target), the newest model training continues from and the
  newest undecided candidate are always kept. Its metadata stays, marked `file_deleted_at`, so
  lineages (which joins a model has learned) stay whole.

Ages come from what the warehouse and the registry recorded (ingest time, join time, evaluation
and model creation time), the same on a local folder and on S3, against `now` (injectable).
Every deletion is recorded in `retention_deletions` (migration 0090) before its objects are
deleted, so a crash in between leaves at worst an orphaned object, never a listed join whose
files are gone.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import duckdb

from cbloop import clock
from cbloop.registry import MODEL_FILE, ModelMetadata, ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import ObjectStore
from cbloop_pipeline.deploy import latest_candidate
from cbloop_pipeline.evaluate import eval_prefix
from cbloop_pipeline.models import (
    deployed_model,
    joins_seen,
    last_event_at,
    latest_trainable,
)
from cbloop_pipeline.segments import SegmentSource

logger = logging.getLogger(__name__)

Kind = Literal["segment", "export", "evaluation", "model"]
KINDS: tuple[Kind, ...] = ("segment", "export", "evaluation", "model")


@dataclass(frozen=True)
class Doomed:
    """One item retention removes (or would remove, in a dry run)."""

    kind: Kind
    experiment: str | None
    item: str
    keys: tuple[str, ...]
    bytes: int
    recorded_at: datetime  # naive UTC: what the age is counted from
    reason: str

    def age_days(self, now: datetime) -> float:
        return (clock.to_naive_utc(now) - self.recorded_at).total_seconds() / 86400.0


@dataclass(frozen=True)
class GcResult:
    dry_run: bool
    now: datetime
    items: list[Doomed]

    def count(self, kind: Kind) -> int:
        return sum(1 for d in self.items if d.kind == kind)

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.items)


def collect(
    con: duckdb.DuckDBPyConnection,
    store: ObjectStore,
    settings: Settings,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> GcResult:
    """Find everything retention allows deleting at `now`, and delete it unless `dry_run`."""
    moment = clock.now() if now is None else now
    items = plan(con, store, settings, now=moment)
    if not dry_run:
        registry = ModelRegistry(store)
        cache = SegmentSource.beside(store, con).cache_dir
        for doomed in items:
            _delete(con, store, registry, doomed, now=moment, cache_dir=cache)
        if items:
            logger.info(
                "retention deleted",
                extra={k: sum(1 for d in items if d.kind == k) for k in KINDS},
            )
    return GcResult(dry_run, moment, items)


def plan(
    con: duckdb.DuckDBPyConnection, store: ObjectStore, settings: Settings, *, now: datetime
) -> list[Doomed]:
    keep = settings.retention
    registry = ModelRegistry(store)
    found: list[Doomed] = []
    if keep.joined_segments_days is not None:
        found += _segments(con, _cutoff(now, keep.joined_segments_days))
    if keep.exports_days is not None:
        found += _exports(con, store, registry, settings, _cutoff(now, keep.exports_days))
    if keep.evaluations_days is not None:
        found += _evaluations(con, store, _cutoff(now, keep.evaluations_days))
    if keep.models_days is not None:
        found += _models(store, registry, settings, _cutoff(now, keep.models_days))
    return found


def _cutoff(now: datetime, days: float) -> datetime:
    return clock.to_naive_utc(now) - timedelta(days=days)


# -- what may go -------------------------------------------------------------------------------

# Per experiment: the newest join's watermarks. A decision row is joined when it lies below
# its own experiment's marks; an outcome row when, for every experiment that has decisions,
# it lies `backward_seconds` below the time mark (a reward may precede its decision by that
# much), so every decision it could belong to was joined already.
_MARKS = """
    WITH marks AS (
        SELECT experiment,
               max(decision_ts_hi) AS ts_hi,
               max(batch_hi) AS batch_hi,
               max(decision_ts_hi - to_microseconds(CAST(backward_seconds * 1e6 AS BIGINT)))
                   AS outcome_ts_hi
        FROM join_jobs GROUP BY experiment
    )
"""

_DECISION_SEGMENTS = (
    _MARKS
    + """
    SELECT s.key, s.size_bytes, s.ingested_at
    FROM ingested_segments s
    WHERE s.kind = 'decisions' AND s.ingested_at <= $cutoff
      AND s.key NOT IN (SELECT item FROM retention_deletions WHERE kind = 'segment')
      AND NOT EXISTS (
          SELECT 1 FROM decisions d LEFT JOIN marks m ON m.experiment = d.experiment
          WHERE d.segment_id = s.segment_id
            AND (m.ts_hi IS NULL OR d.ts IS NULL OR d.ts > m.ts_hi OR d.batch_id > m.batch_hi)
      )
    ORDER BY s.key
"""
)

_OUTCOME_SEGMENTS = (
    _MARKS
    + """,
    bound AS (
        -- NULL (keep everything) while an experiment with decisions has never joined
        SELECT CASE WHEN count(*) = count(m.outcome_ts_hi) THEN min(m.outcome_ts_hi) END AS ts_hi,
               min(m.batch_hi) AS batch_hi
        FROM (SELECT DISTINCT experiment FROM decisions) e
        LEFT JOIN marks m ON m.experiment = e.experiment
    )
    SELECT s.key, s.size_bytes, s.ingested_at
    FROM ingested_segments s, bound b
    WHERE s.kind = 'outcomes' AND s.ingested_at <= $cutoff
      AND b.ts_hi IS NOT NULL AND s.batch_id <= b.batch_hi
      AND s.key NOT IN (SELECT item FROM retention_deletions WHERE kind = 'segment')
      AND NOT EXISTS (
          SELECT 1 FROM outcomes o
          WHERE o.segment_id = s.segment_id AND (o.ts IS NULL OR o.ts > b.ts_hi)
      )
    ORDER BY s.key
"""
)


def _segments(con: duckdb.DuckDBPyConnection, cutoff: datetime) -> list[Doomed]:
    found = []
    for sql, kind in ((_DECISION_SEGMENTS, "decisions"), (_OUTCOME_SEGMENTS, "outcomes")):
        for key, size, ingested_at in con.execute(sql, {"cutoff": cutoff}).fetchall():
            found.append(
                Doomed(
                    "segment",
                    None,
                    str(key),
                    (str(key),),
                    int(size),
                    ingested_at,
                    f"{kind} segment joined, ingested {ingested_at:%Y-%m-%d %H:%M}Z",
                )
            )
    return found


def _experiments(con: duckdb.DuckDBPyConnection, settings: Settings, table: str) -> list[str]:
    rows = con.execute(f"SELECT DISTINCT experiment FROM {table}").fetchall()
    return sorted({*settings.experiments, *(str(r[0]) for r in rows if r[0] is not None)})


def _exports(
    con: duckdb.DuckDBPyConnection,
    store: ObjectStore,
    registry: ModelRegistry,
    settings: Settings,
    cutoff: datetime,
) -> list[Doomed]:
    found = []
    for name in _experiments(con, settings, "join_jobs"):
        if name not in settings.experiments:
            continue  # nobody can say what its models learned: keep
        newest = latest_trainable(registry, name, settings.experiment(name))
        learned = joins_seen(registry, newest)
        rows = con.execute(
            "SELECT join_id, finished_at, train_events FROM join_jobs "
            "WHERE experiment = ? AND finished_at <= ? AND join_id NOT IN "
            "(SELECT item FROM retention_deletions WHERE kind = 'export') ORDER BY job_seq",
            [name, cutoff],
        ).fetchall()
        for join_id, finished_at, train_events in rows:
            if str(join_id) not in learned and int(train_events) > 0:
                continue  # the newest model has not learned it yet
            objects = store.list(f"joined/{name}/{join_id}/")
            found.append(
                Doomed(
                    "export",
                    name,
                    str(join_id),
                    tuple(o.key for o in objects),
                    sum(o.size for o in objects),
                    finished_at,
                    "learned by the newest model" if int(train_events) else "no train events",
                )
            )
    return found


def _evaluations(
    con: duckdb.DuckDBPyConnection, store: ObjectStore, cutoff: datetime
) -> list[Doomed]:
    rows = con.execute(
        "SELECT eval_id, experiment, created_at FROM evaluations "
        "WHERE created_at <= ? AND eval_id NOT IN "
        "(SELECT item FROM retention_deletions WHERE kind = 'evaluation') ORDER BY created_at",
        [cutoff],
    ).fetchall()
    found = []
    for eval_id, name, created_at in rows:
        objects = store.list(f"{eval_prefix(str(name), str(eval_id))}/")
        found.append(
            Doomed(
                "evaluation",
                str(name),
                str(eval_id),
                tuple(o.key for o in objects),
                sum(o.size for o in objects),
                created_at,
                "evaluation files (figures stay in the warehouse)",
            )
        )
    return found


def protected_models(
    registry: ModelRegistry, name: str, settings: Settings, models: list[ModelMetadata]
) -> set[str]:
    """Models whose files retention never deletes, whatever their age."""
    keep: set[str] = set()
    pointer = registry.current(name)
    if pointer is not None:
        keep.add(pointer.model_id)
        if pointer.previous is not None:
            keep.add(pointer.previous)
    live = deployed_model(registry, name)
    if live is not None:
        keep.add(live.model_id)
    # The rollback target: the most recently live model other than the pointer's.
    current_id = pointer.model_id if pointer is not None else None
    earlier = [
        (max(last_event_at(m, "deployed"), last_event_at(m, "retired")), m.model_id)
        for m in models
        if m.model_id != current_id
    ]
    earlier = [e for e in earlier if e[0]]
    if earlier:
        keep.add(max(earlier)[1])
    if name in settings.experiments:
        experiment = settings.experiment(name)
        for meta in (
            latest_trainable(registry, name, experiment),
            latest_candidate(registry, name, experiment),
        ):
            if meta is not None:
                keep.add(meta.model_id)
    return keep


def _models(
    store: ObjectStore, registry: ModelRegistry, settings: Settings, cutoff: datetime
) -> list[Doomed]:
    found = []
    for name in sorted(settings.experiments):
        models = registry.list_models(name)
        keep = protected_models(registry, name, settings, models)
        for meta in models:
            if meta.model_id in keep or meta.state == "deployed" or meta.file_deleted_at:
                continue
            created = clock.to_naive_utc(clock.parse_ts(meta.created_at))
            if created > cutoff:
                continue
            key = f"models/{name}/{meta.model_id}/{MODEL_FILE}"
            info = store.stat(key)
            found.append(
                Doomed(
                    "model",
                    name,
                    meta.model_id,
                    (key,) if info is not None else (),
                    info.size if info is not None else 0,
                    created,
                    f"{meta.state}, not served",
                )
            )
    return found


# -- deleting ----------------------------------------------------------------------------------


def _delete(
    con: duckdb.DuckDBPyConnection,
    store: ObjectStore,
    registry: ModelRegistry,
    doomed: Doomed,
    *,
    now: datetime,
    cache_dir: Path,
) -> None:
    # Recorded first: readers skip the item from here on, so no step starts on files that
    # are about to vanish.
    con.execute(
        "INSERT INTO retention_deletions VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            doomed.kind,
            doomed.experiment,
            doomed.item,
            len(doomed.keys),
            doomed.bytes,
            clock.to_naive_utc(now),
            doomed.reason,
        ],
    )
    if doomed.kind == "model" and doomed.experiment is not None:
        meta = registry.metadata(doomed.experiment, doomed.item)
        meta.file_deleted_at = clock.format_ts(now)
        meta.record("file deleted", by="retention", reason=doomed.reason)
        registry.update_metadata(meta)
    for key in doomed.keys:
        store.delete(key)
    if doomed.kind == "segment":
        # The download cache of a remote store (beside the warehouse) holds a copy.
        (cache_dir / doomed.item).unlink(missing_ok=True)
    elif doomed.kind in ("export", "evaluation"):
        _remove_empty_folder(store, doomed.keys)
    logger.debug("retention deleted %s %s", doomed.kind, doomed.item)


def _remove_empty_folder(store: ObjectStore, keys: tuple[str, ...]) -> None:
    """A local store's now empty item folder goes too (segment folders stay: writers use them)."""
    for key in keys[:1]:
        path = store.local_path(key)
        if path is None:
            return
        # Not empty (something new arrived) or already gone: leave it.
        with contextlib.suppress(OSError):
            path.parent.rmdir()
