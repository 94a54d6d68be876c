"""`cbloop gc`: apply the retention settings now (the loop also does after every cycle)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from cbloop.settings import Settings
from cbloop_cli.common import ConfigOption, settings_from
from cbloop_cli.errors import fail
from cbloop_cli.experiments import catalog_settings

if TYPE_CHECKING:
    from cbloop_pipeline.retention import GcResult

logger = logging.getLogger(__name__)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def print_gc(result: GcResult) -> None:
    verb = "would delete" if result.dry_run else "deleted"
    for d in result.items:
        where = f"{d.experiment}/" if d.experiment else ""
        typer.echo(
            f"{verb} {d.kind:<10} {where}{d.item}  ({len(d.keys)} objects, {_size(d.bytes)}, "
            f"{d.age_days(result.now):.1f} days old: {d.reason})"
        )
    counts = ", ".join(
        f"{result.count(k)} {k}s" for k in ("segment", "export", "evaluation", "model")
    )
    typer.echo(f"retention: {verb} {counts}; {_size(result.bytes)}")


def run_retention(settings: Settings, *, dry_run: bool) -> GcResult:
    """One retention pass on the settings' warehouse and store (caller holds the lock)."""
    from cbloop.storage import open_store
    from cbloop_pipeline.retention import collect
    from cbloop_pipeline.warehouse import connect

    con = connect(settings.warehouse)
    try:
        return collect(con, open_store(settings.storage), settings, dry_run=dry_run)
    finally:
        con.close()


def register(app: typer.Typer) -> None:
    @app.command()
    def gc(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
        ] = False,
        config: ConfigOption = None,
    ) -> None:
        """Delete joined segments, exports, evaluations and unserved models past retention."""
        from cbloop.registry import RegistryError
        from cbloop.storage import StorageError
        from cbloop_pipeline.lock import LockHeld, exclusive_lock
        from cbloop_pipeline.warehouse import WarehouseError

        settings = settings_from(config)
        if not settings.retention.enabled():
            typer.echo("retention: every retention.*_days is null (keep forever); nothing to do")
            return
        settings = catalog_settings(settings)
        try:
            # The loop's lock: a gc must not delete exports a running cycle is training on.
            with exclusive_lock(settings.pipeline.lock_path):
                result = run_retention(settings, dry_run=dry_run)
        except LockHeld as exc:
            fail(f"{exc}; the running loop applies retention itself after each cycle", code=3)
        except (WarehouseError, StorageError, RegistryError) as exc:
            fail(str(exc), code=1)
        print_gc(result)
