"""The dashboard's snapshot: a read-only copy of the warehouse the loop publishes after a cycle.

DuckDB allows one writing process, and the learning loop is it. So the dashboard never opens
the warehouse: after each cycle the loop checkpoints the warehouse, copies the file while it
still holds it (no other process can write it meanwhile), adds small summary tables to the
copy (`summary.build_summary`) and publishes it under a new name in the snapshot folder, then
points the folder's CURRENT file at it (written aside and renamed: readers see the old name or
the new one, never half of either). Every snapshot has its own file name because DuckDB shares
one database instance per path within a process: a reader must open a new path to see new
data. The newest KEEP snapshots are kept; an older one a reader still has open stays readable
until it closes it (POSIX unlink). Publishing is best effort for the loop: a failure is logged
and never fails the cycle.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
from pathlib import Path

import duckdb

from cbloop.clock import utcnow_naive
from cbloop.eventlog.layout import is_closed_segment, kind_prefix
from cbloop.settings import Settings, WarehouseSettings
from cbloop.storage import open_store
from cbloop.storage.base import StorageError
from cbloop_pipeline.dashboard.summary import build_summary
from cbloop_pipeline.ingest import pending_segments
from cbloop_pipeline.warehouse import WarehouseError, connect

logger = logging.getLogger(__name__)

SNAPSHOT_SUFFIX = ".dashboard"
CURRENT = "CURRENT"
KEEP = 3
_seq = itertools.count()


def snapshot_path(warehouse: WarehouseSettings) -> Path:
    """The snapshot folder of a warehouse: beside it, `<name>.dashboard/`."""
    path = warehouse.path
    return path.with_name(path.stem + SNAPSHOT_SUFFIX)


def current_snapshot(folder: Path) -> Path | None:
    """The snapshot file the folder's CURRENT names, if one was published."""
    try:
        name = (folder / CURRENT).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return folder / name if name else None


def publish(settings: Settings, *, dest: Path | None = None) -> Path:
    """Publish a snapshot: into the warehouse's snapshot folder (new file, CURRENT moved), or
    as the single file `dest` (replaced; for a static copy nothing reads while it changes).
    Returns the snapshot file."""
    if dest is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _write_snapshot(settings, dest)
        return dest
    folder = snapshot_path(settings.warehouse)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"snapshot-{utcnow_naive():%Y%m%dT%H%M%S%f}-{os.getpid()}-{next(_seq)}.duckdb"
    target = folder / name
    _write_snapshot(settings, target)
    pointer = folder / f".{CURRENT}.{os.getpid()}.tmp"
    pointer.write_text(name + "\n", encoding="utf-8")
    os.replace(pointer, folder / CURRENT)
    for old in sorted(folder.glob("snapshot-*.duckdb"), key=lambda p: p.stat().st_mtime)[:-KEEP]:
        if old != target:
            old.unlink(missing_ok=True)
    logger.info("dashboard snapshot published", extra={"path": str(target)})
    return target


def _write_snapshot(settings: Settings, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        con = connect(settings.warehouse)
        try:
            # A checkpoint empties the write-ahead log into the file; holding the connection
            # while copying keeps every other process from writing it under us.
            con.execute("CHECKPOINT")
            waiting_ingest = _waiting_ingest(settings, con)
            shutil.copyfile(settings.warehouse.path, tmp)
        finally:
            con.close()
        copy = duckdb.connect(str(tmp))
        try:
            copy.execute("SET TimeZone = 'UTC'")
            build_summary(
                copy,
                published_at=utcnow_naive(),
                waiting_ingest=waiting_ingest,
                waiting_ship=_waiting_ship(settings),
            )
            copy.execute("CHECKPOINT")
        finally:
            copy.close()
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish_quietly(settings: Settings) -> Path | None:
    """`publish`, for the loop: a failure is logged and the loop goes on."""
    try:
        return publish(settings)
    except (WarehouseError, StorageError) as exc:
        # Known and already said by the loop itself (busy, damaged, store away): one line.
        logger.warning("dashboard snapshot not published; the loop goes on: %s", exc)
        return None
    except (OSError, duckdb.Error):
        logger.exception("dashboard snapshot not published; the loop goes on")
        return None


def _waiting_ingest(settings: Settings, con: duckdb.DuckDBPyConnection) -> int | None:
    try:
        return len(pending_segments(con, open_store(settings.storage)))
    except (OSError, StorageError):
        logger.warning("cannot list the event store for the dashboard", exc_info=True)
        return None


def _waiting_ship(settings: Settings) -> int | None:
    """Closed segments in this machine's spool not yet shipped to S3 (None: no spool)."""
    if settings.storage.backend != "s3":
        return None
    count = 0
    for kind in ("decisions", "outcomes"):
        base = settings.storage.root / kind_prefix(kind)
        if base.is_dir():
            count += sum(1 for p in base.rglob("*") if is_closed_segment(p.as_posix()))
    return count
