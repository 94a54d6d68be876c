"""`cbloop rebuild-warehouse`: a new warehouse from the event log, the joins' manifests and the
model registry, for when the file is damaged and there is no backup.

The event log is the source of truth for what happened; the warehouse is derived from it:

1. the damaged file (and its WAL) is moved aside, never deleted: `<name>.damaged-<time>`;
2. a fresh file is migrated and every closed segment is ingested again (lines that break the
   event contract are quarantined again);
3. every join recorded by a manifest in the store (`joined/<experiment>/<join_id>/`) is run
   again at its recorded `as_of`, oldest first, so join ids, and with them the record of
   which joins each model learned, stay valid; its export files are rewritten;
4. the registry's models, evaluations and deployment decisions are mirrored again.

Not rebuilt: the learning loop's step history (`loop_steps`, `experiment_state`: the next
loop starts at cycle 1), ingest batch ids and times, and join settings: a replayed join uses
the experiment's current reward window and split, so if those changed since, or a segment
was closed only after the join that would have taken it, the replayed join can differ from
the original (it says so in the log).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from cbloop.clock import format_ts, now
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import ObjectStore, open_store
from cbloop_pipeline.ingest import IngestResult, ingest
from cbloop_pipeline.join import parse_as_of, run_join
from cbloop_pipeline.mirror import sync_experiment
from cbloop_pipeline.warehouse import WarehouseCorrupt, WarehouseError, connect

logger = logging.getLogger(__name__)

_MANIFEST = re.compile(r"^joined/([^/]+)/(j(\d+)-[^/]+)/manifest\.json$")


class RebuildError(WarehouseError):
    """The warehouse could not be rebuilt."""


@dataclass
class RebuildResult:
    moved_aside: list[Path] = field(default_factory=list)
    ingest: IngestResult = field(default_factory=IngestResult)
    joins_replayed: int = 0
    joins_differing: list[str] = field(default_factory=list)
    joins_skipped: list[str] = field(default_factory=list)
    models_mirrored: int = 0


def warehouse_is_healthy(settings: Settings) -> bool:
    """Whether the warehouse file opens and reads (a missing file counts as unhealthy)."""
    if not settings.warehouse.path.exists():
        return False
    try:
        con = connect(settings.warehouse, read_only=True)
    except WarehouseCorrupt:
        return False
    con.close()
    return True


def move_aside(path: Path) -> list[Path]:
    """Rename the database file and its WAL out of the way; returns the new paths."""
    stamp = format_ts(now()).replace(":", "").replace("-", "")
    moved = []
    for file in (path, path.with_name(path.name + ".wal")):
        if file.exists():
            dest = file.with_name(f"{file.name}.damaged-{stamp}")
            file.replace(dest)
            moved.append(dest)
    return moved


def rebuild_warehouse(settings: Settings) -> RebuildResult:
    """Rebuild the warehouse file of `settings` (see the module docstring)."""
    result = RebuildResult(moved_aside=move_aside(settings.warehouse.path))
    store = open_store(settings.storage)
    registry = ModelRegistry(store)
    con = connect(settings.warehouse)
    try:
        result.ingest = ingest(con, store)
        for experiment, join_id, as_of in _recorded_joins(store):
            if experiment not in settings.experiments:
                result.joins_skipped.append(join_id)
                logger.warning(
                    "join of an experiment no longer configured is not replayed",
                    extra={"join_id": join_id, "experiment": experiment},
                )
                continue
            job = run_join(
                con, store, experiment, settings.experiment(experiment), as_of=parse_as_of(as_of)
            )
            result.joins_replayed += 1
            if job.join_id != join_id:
                result.joins_differing.append(join_id)
                logger.warning(
                    "replayed join got another id",
                    extra={"recorded": join_id, "replayed": job.join_id},
                )
        names = set(settings.experiments) | _registry_experiments(store)
        for name in sorted(names):
            result.models_mirrored += sync_experiment(con, registry, name)
    finally:
        con.close()
    return result


def _recorded_joins(store: ObjectStore) -> list[tuple[str, str, str]]:
    """(experiment, join_id, as_of) of every finished join in the store, in job order."""
    found: list[tuple[int, str, str, str]] = []
    for info in store.list("joined/"):
        match = _MANIFEST.match(info.key)
        if match is None:
            continue
        manifest = orjson.loads(store.get_bytes(info.key))
        found.append((int(match.group(3)), match.group(1), match.group(2), manifest["as_of"]))
    found.sort()
    return [(experiment, join_id, as_of) for _, experiment, join_id, as_of in found]


def _registry_experiments(store: ObjectStore) -> set[str]:
    names = set()
    for info in store.list("models/"):
        parts = info.key.split("/")
        if len(parts) >= 3:
            names.add(parts[1])
    return names
