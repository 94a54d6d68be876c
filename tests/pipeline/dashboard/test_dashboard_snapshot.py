"""Publishing snapshots: each is a new file named by CURRENT; a reader follows it; a cursor
taken before a publish keeps reading the snapshot it started on."""

from __future__ import annotations

from datetime import datetime

import duckdb

from cbloop.settings import Settings
from cbloop_pipeline.dashboard.reader import SnapshotReader
from cbloop_pipeline.dashboard.snapshot import KEEP, current_snapshot, publish, snapshot_path
from cbloop_pipeline.warehouse import connect


def _published_at(cursor: duckdb.DuckDBPyConnection) -> datetime:
    row = cursor.execute("SELECT published_at FROM dash_meta").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_a_reader_follows_new_snapshots_and_old_cursors_keep_theirs(settings: Settings) -> None:
    folder = snapshot_path(settings.warehouse)
    first = publish(settings)
    assert current_snapshot(folder) == first
    reader = SnapshotReader(folder)
    try:
        before = reader.cursor()
        old = _published_at(before)
        with connect(settings.warehouse) as con:  # the loop writes between cycles
            con.execute("INSERT INTO experiments (name) VALUES ('fresh')")
        second = publish(settings)
        assert second != first and current_snapshot(folder) == second
        after = reader.cursor()
        assert _published_at(after) > old
        assert after.execute("SELECT count(*) FROM experiments").fetchone() == (1,)
        # the request that started before the publish still reads its own snapshot
        assert _published_at(before) == old
        assert before.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
    finally:
        reader.close()


def test_only_the_newest_snapshots_are_kept(settings: Settings) -> None:
    for _ in range(KEEP + 2):
        newest = publish(settings)
    folder = snapshot_path(settings.warehouse)
    kept = sorted(folder.glob("snapshot-*.duckdb"))
    assert len(kept) == KEEP and newest in kept
    assert not list(folder.glob("*.tmp"))
