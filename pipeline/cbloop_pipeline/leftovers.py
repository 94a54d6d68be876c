"""What a killed join leaves behind, found and removed by the next one.

A join writes its export into a work folder (`.tmp-<join_id>-*`) and moves the finished files
to `joined/<experiment>/<join_id>/`; its warehouse transaction commits after that and the
manifest is written last. A process killed on the way leaves the work folder, or an export
folder that no `join_jobs` row owns and no manifest marks finished. The restart uses a new
join id, so nothing else would ever remove them.

Only the process holding the warehouse read-write may join (DuckDB allows one writing
process), so while it holds the warehouse every such folder belongs to a dead run.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cbloop.storage import ObjectStore
from cbloop_pipeline.segments import SegmentSource

logger = logging.getLogger(__name__)

WORK_PREFIX = ".tmp-"
_JOINED = "joined"
_MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Cleaned:
    work_folders: int = 0
    unfinished_exports: int = 0
    bytes_freed: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.work_folders or self.unfinished_exports)


def export_work_parent(source: SegmentSource, experiment: str) -> Path:
    """Where a join of `experiment` builds its export before placing it.

    Local store: beside the destination, so placing the files is a rename. Remote store: a
    folder of the download cache, known to `clean_leftovers` (never the shared system temp,
    where another program's files live).
    """
    local = source.store.local_path(f"{_JOINED}/{experiment}")
    parent = local if local is not None else source.cache_dir / ".exports"
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def clean_leftovers(con: duckdb.DuckDBPyConnection, source: SegmentSource) -> Cleaned:
    """Remove the export work folders and unowned export folders of killed joins."""
    work, freed = _remove_work_folders(source)
    owned = {str(j) for (j,) in con.execute("SELECT join_id FROM join_jobs").fetchall()}
    unfinished, more = _remove_unowned_exports(source.store, owned)
    result = Cleaned(work, unfinished, freed + more)
    if result.anything:
        logger.warning(
            "removed what a killed join left behind",
            extra={
                "work_folders": result.work_folders,
                "unfinished_exports": result.unfinished_exports,
                "bytes_freed": result.bytes_freed,
            },
        )
    return result


def _remove_work_folders(source: SegmentSource) -> tuple[int, int]:
    parents: list[Path] = [source.cache_dir / ".exports"]
    joined = source.store.local_path(_JOINED)
    if joined is not None and joined.is_dir():
        parents += [p for p in joined.iterdir() if p.is_dir()]
    count = freed = 0
    for parent in parents:
        if not parent.is_dir():
            continue
        for folder in parent.glob(f"{WORK_PREFIX}*"):
            if folder.is_dir():
                freed += _size(folder)
                shutil.rmtree(folder, ignore_errors=True)
                count += 1
    return count, freed


def _remove_unowned_exports(store: ObjectStore, owned: set[str]) -> tuple[int, int]:
    """Export folders joined/<experiment>/<join_id>/ with no manifest and no join_jobs row."""
    folders: dict[str, list[tuple[str, int]]] = {}
    for info in store.list(f"{_JOINED}/"):
        parts = info.key.split("/")
        if len(parts) != 4 or parts[2].startswith(WORK_PREFIX):
            continue
        folders.setdefault("/".join(parts[:3]), []).append((parts[3], info.size))
    count = freed = 0
    for folder, files in folders.items():
        join_id = folder.rsplit("/", 1)[1]
        if join_id in owned or any(name == _MANIFEST for name, _ in files):
            continue
        for name, size in files:
            store.delete(f"{folder}/{name}")
            freed += size
        local = store.local_path(folder)
        if local is not None:
            shutil.rmtree(local, ignore_errors=True)
        count += 1
    return count, freed


def _size(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total
