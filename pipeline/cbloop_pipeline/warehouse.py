"""The DuckDB warehouse: opening it and bringing its schema up to date.

Migrations are `migrations/NNNN_name.sql`, applied in version order, each in one transaction
together with its row in `schema_migrations`, so a crash can never leave one half-applied.
Every pipeline command opens the warehouse through `connect`, which migrates first.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path

import duckdb

from cbloop.clock import utcnow_naive
from cbloop.errors import CbloopError, TransientError
from cbloop.settings import WarehouseSettings

logger = logging.getLogger(__name__)

# The SQL ships as package data (`migrations/` in the source tree), so an installed wheel
# migrates from any working folder. Never zipped, so the resource folder is a real path.
MIGRATIONS_DIR = Path(str(resources.files("cbloop_migrations")))
_NAME = re.compile(r"^(\d{4})_([A-Za-z0-9_]+)\.sql$")


class WarehouseError(CbloopError):
    """The warehouse cannot be used (locked by another process, bad migrations, ...)."""

    hint = "check warehouse.path in the settings; the file must be a DuckDB warehouse"


class WarehouseBusy(WarehouseError, TransientError):
    """Another process holds the warehouse file (DuckDB allows one writing process)."""

    hint = "another cbloop command holds the warehouse; run this again when it has finished"


class WarehouseCorrupt(WarehouseError):
    """The warehouse file is not a readable DuckDB database (truncated, overwritten, ...).

    Retrying cannot help: an operator restores the file or rebuilds it from the event log.
    """

    def __init__(self, path: Path, cause: BaseException) -> None:
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        super().__init__(
            f"warehouse {path} is corrupt or truncated ({detail}); restore it from a backup, "
            "or run `cbloop rebuild-warehouse` to rebuild it from the event log"
        )
        self.path = path


# What DuckDB says when the file itself is damaged, as opposed to a busy lock or a bad query.
_CORRUPTION_HINTS = (
    "not a valid duckdb database",
    "corrupt",
    "checksum",
    "could not read enough bytes",
    "truncated",
    "invalid metadata",
)


def is_corruption(exc: BaseException) -> bool:
    """Whether an error means the database file is damaged."""
    if isinstance(exc, WarehouseCorrupt):
        return True
    if not isinstance(exc, duckdb.Error):
        return False
    text = str(exc).lower()
    return any(hint in text for hint in _CORRUPTION_HINTS)


class MigrationError(WarehouseError):
    """The migrations folder or a migration script is not usable."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration scripts in `directory`, by version; other files are ignored."""
    if not directory.is_dir():
        raise MigrationError(f"migrations folder {directory} does not exist")
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"migration {path.name} is not named NNNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(
                f"migrations {found[version].path.name} and {path.name} share version {version}"
            )
        found[version] = Migration(version, match.group(2), path)
    return [found[v] for v in sorted(found)]


def migrate(con: duckdb.DuckDBPyConnection, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply every migration not applied yet; returns those applied now. Idempotent."""
    con.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     INTEGER PRIMARY KEY,
            name        VARCHAR NOT NULL,
            checksum    VARCHAR NOT NULL,
            applied_at  TIMESTAMP NOT NULL
        )
        """
    )
    rows = con.execute("SELECT version, name, checksum FROM schema_migrations").fetchall()
    applied = {int(version): (str(name), str(checksum)) for version, name, checksum in rows}
    done: list[Migration] = []
    for migration in discover(directory):
        if migration.version in applied:
            if applied[migration.version][1] != migration.checksum:
                # Applied scripts are history: editing one changes nothing already migrated,
                # so say so loudly instead of pretending it was re-applied.
                logger.warning(
                    "migration changed after it was applied; add a new migration instead",
                    extra={"migration": migration.path.name},
                )
            continue
        con.begin()
        try:
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                [migration.version, migration.name, migration.checksum, utcnow_naive()],
            )
            con.commit()
        except duckdb.Error as exc:
            con.rollback()
            raise MigrationError(f"migration {migration.path.name} failed: {exc}") from exc
        logger.info("migration applied", extra={"migration": migration.path.name})
        done.append(migration)
    return done


def applied_migrations(con: duckdb.DuckDBPyConnection) -> list[tuple[int, str, datetime]]:
    rows = con.execute(
        "SELECT version, name, applied_at FROM schema_migrations ORDER BY version"
    ).fetchall()
    return [(int(v), str(n), a) for v, n, a in rows]


def connect(
    settings: WarehouseSettings,
    *,
    migrations: Path = MIGRATIONS_DIR,
    read_only: bool = False,
) -> duckdb.DuckDBPyConnection:
    """Open the warehouse file (created if missing) and migrate it, unless read-only."""
    path = settings.path
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        if isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower():
            raise WarehouseBusy(
                f"warehouse {path} is in use by another process (only one pipeline command "
                "can run at a time)"
            ) from exc
        if is_corruption(exc):
            raise WarehouseCorrupt(path, exc) from exc
        raise WarehouseError(f"cannot open warehouse {path}: {exc}") from exc
    # No progress bar: pipeline commands report through logging, not stray terminal output.
    con.execute("SET enable_progress_bar = false")
    # Nothing here relies on the physical order of rows (segment lines are numbered when they
    # are read), so DuckDB may insert and export in parallel without re-sequencing.
    con.execute("SET preserve_insertion_order = false")
    # Every time in the warehouse is UTC; TIMESTAMPTZ values convert to it.
    con.execute("SET TimeZone = 'UTC'")
    try:
        if read_only:
            # Touch the catalog: a damaged file often opens and fails at the first read.
            con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()
        else:
            migrate(con, migrations)
    except BaseException as exc:
        con.close()
        cause = exc.__cause__ if isinstance(exc, MigrationError) else exc
        if cause is not None and is_corruption(cause):
            raise WarehouseCorrupt(path, cause) from exc
        raise
    return con
