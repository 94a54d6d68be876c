"""Read-only access to the newest published snapshot, reopened when the loop replaces it."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb

from cbloop.errors import TransientError
from cbloop_pipeline.dashboard.snapshot import current_snapshot


class SnapshotMissing(TransientError):
    """No snapshot has been published yet (the loop has not finished a cycle)."""


class SnapshotReader:
    """Hands out cursors on the current snapshot.

    `path` is a snapshot folder (its CURRENT file names the newest snapshot, which the loop
    moves after each cycle) or one snapshot file. A request gets a cursor on the snapshot
    current when it starts and keeps it to the end, so a new snapshot never changes a page
    halfway; the next request opens the new file. Old connections are dropped, not closed:
    cursors of requests in flight still hold them.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._identity: tuple[str, int, int] | None = None

    def _resolve(self) -> Path:
        if self.path.is_dir():
            current = current_snapshot(self.path)
            if current is not None and current.exists():
                return current
        elif self.path.exists():
            return self.path
        raise SnapshotMissing(
            f"no dashboard snapshot at {self.path} yet: the learning loop publishes one "
            "after each cycle (`cbloop loop`), or run `cbloop dashboard --publish`"
        )

    def cursor(self) -> duckdb.DuckDBPyConnection:
        file = self._resolve()
        st = file.stat()
        identity = (str(file), st.st_ino, st.st_mtime_ns)
        with self._lock:
            if self._con is None or identity != self._identity:
                con = duckdb.connect(str(file), read_only=True)
                con.execute("SET TimeZone = 'UTC'")
                self._con, self._identity = con, identity
            return self._con.cursor()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
            self._con = None
