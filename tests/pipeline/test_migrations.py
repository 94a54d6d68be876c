"""Numbered migrations: applied in order, recorded, idempotent, all-or-nothing each."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from cbloop.settings import WarehouseSettings
from cbloop_pipeline.warehouse import (
    MIGRATIONS_DIR,
    MigrationError,
    WarehouseBusy,
    applied_migrations,
    connect,
    discover,
    migrate,
)

SCHEMA = {
    "experiments",
    "ingest_batches",
    "ingested_segments",
    "rejected_lines",
    "decisions",
    "outcomes",
    "join_jobs",
    "joined_events",
    "unused_rewards",
}
VIEWS = {
    "report_events",
    "report_cells",
    "report_hourly",
    "report_by_model",
    "report_by_experiment",
}


def _names(con: duckdb.DuckDBPyConnection, kind: str) -> set[str]:
    rows = con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_type = ?", [kind]
    ).fetchall()
    return {str(r[0]) for r in rows}


def test_connect_applies_every_migration_in_order_and_records_it(tmp_path: Path) -> None:
    con = connect(WarehouseSettings(path=tmp_path / "wh" / "warehouse.duckdb"))
    try:
        applied = applied_migrations(con)
        assert [v for v, _, _ in applied] == sorted(v for v, _, _ in applied)
        ours = [(v, n) for v, n, _ in applied if v < 10]
        assert ours == [(m.version, m.name) for m in discover() if m.version < 10]
        assert ours[0] == (1, "experiments")
        assert _names(con, "BASE TABLE") >= SCHEMA
        assert _names(con, "VIEW") >= VIEWS
    finally:
        con.close()


def test_migrating_again_applies_nothing(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        first = migrate(con)
        second = migrate(con)
        assert len(first) == len(discover())
        assert second == []
        assert len(applied_migrations(con)) == len(first)
    finally:
        con.close()


def test_a_new_migration_is_applied_alone_after_the_others(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, folder)
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        migrate(con, folder)
        (folder / "0999_notes.sql").write_text("CREATE TABLE notes (body VARCHAR);")
        applied = migrate(con, folder)
        assert [(m.version, m.name) for m in applied] == [(999, "notes")]
        assert "notes" in _names(con, "BASE TABLE")
    finally:
        con.close()


def test_a_failing_migration_leaves_no_trace_and_stops_the_later_ones(tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_good.sql").write_text("CREATE TABLE good (x INTEGER);")
    (folder / "0002_bad.sql").write_text("CREATE TABLE half (x INTEGER);\nCREATE TABLE oops (;")
    (folder / "0003_after.sql").write_text("CREATE TABLE after (x INTEGER);")
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    try:
        with pytest.raises(MigrationError, match=r"0002_bad\.sql"):
            migrate(con, folder)
        assert _names(con, "BASE TABLE") == {"schema_migrations", "good"}
        assert [v for v, _, _ in applied_migrations(con)] == [1]
    finally:
        con.close()


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["1_short.sql"], "not named NNNN_name.sql"),
        (["0001_a.sql", "0001_b.sql"], "share version 1"),
    ],
)
def test_badly_named_migrations_are_refused(tmp_path: Path, files: list[str], message: str) -> None:
    for name in files:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=message):
        discover(tmp_path)


def test_a_second_process_gets_a_clear_busy_error(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
            "print('ready', flush=True); time.sleep(60)",
            str(path),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        with pytest.raises(WarehouseBusy, match="in use by another process"):
            connect(WarehouseSettings(path=path))
    finally:
        holder.kill()
        holder.wait()
