"""Read-only access to the newest published snapshot, reopened when the loop replaces it."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb

from cbloop.errors import TransientError


class SnapshotMissing(TransientError):
    """No snapshot has been published yet (the loop has not finished a cycle)."""


class SnapshotReader:
    """Hands out cursors on the current snapshot file.

    The loop replaces the file by renaming a new one over it; a connection opened before
    keeps reading the old file (its inode stays alive while open), so a request in flight is
    never disturbed. The next request sees the new inode and opens the new file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._identity: tuple[int, int] | None = None

    def cursor(self) -> duckdb.DuckDBPyConnection:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise SnapshotMissing(
                f"no dashboard snapshot at {self.path} yet: the learning loop publishes one "
                "after each cycle (`cbloop loop`)"
            ) from None
        identity = (st.st_ino, st.st_mtime_ns)
        with self._lock:
            if self._con is None or identity != self._identity:
                con = duckdb.connect(str(self.path), read_only=True)
                con.execute("SET TimeZone = 'UTC'")
                # The old connection is dropped, not closed: cursors of requests in flight
                # hold it until they finish.
                self._con, self._identity = con, identity
            return self._con.cursor()

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
            self._con = None
