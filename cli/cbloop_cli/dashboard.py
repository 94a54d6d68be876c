"""`cbloop dashboard`: the read-only web dashboard over the loop's published snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cbloop_cli.common import ConfigOption
from cbloop_cli.errors import fail
from cbloop_cli.experiments import catalog_settings_from

DEFAULT_PORT = 8050


def register(app: typer.Typer) -> None:
    @app.command()
    def dashboard(
        *,
        port: Annotated[
            int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
        ] = DEFAULT_PORT,
        host: Annotated[str, typer.Option("--host", help="Address to bind.")] = "127.0.0.1",
        snapshot: Annotated[
            Path | None,
            typer.Option(
                "--snapshot",
                help="Snapshot folder or file to read (default: the folder "
                "<warehouse>.dashboard/, where `cbloop loop` publishes one after every cycle).",
            ),
        ] = None,
        publish: Annotated[
            bool,
            typer.Option(
                "--publish",
                help="Publish a snapshot of the warehouse first (when no loop is running).",
            ),
        ] = False,
        config: ConfigOption = None,
    ) -> None:
        """Serve the experiment dashboard (pages + JSON API); it never writes the warehouse."""
        import uvicorn

        from cbloop_pipeline.dashboard.app import create_app
        from cbloop_pipeline.dashboard.snapshot import current_snapshot, snapshot_path
        from cbloop_pipeline.dashboard.snapshot import publish as publish_snapshot
        from cbloop_pipeline.warehouse import WarehouseError

        # The experiments as the store has them (what workers serve), not config.yaml's seed.
        settings = catalog_settings_from(config)
        path = snapshot if snapshot is not None else snapshot_path(settings.warehouse)
        if publish:
            try:
                publish_snapshot(settings, dest=None if snapshot is None else path)
            except (WarehouseError, OSError) as exc:
                fail(f"cannot publish a snapshot: {exc}", code=1)
        if not path.exists() or (path.is_dir() and current_snapshot(path) is None):
            typer.echo(
                f"no snapshot at {path} yet: pages answer 503 until `cbloop loop` finishes a "
                "cycle (or run with --publish)",
                err=True,
            )
        typer.echo(f"dashboard on http://{host}:{port}/ (snapshot {path})", err=True)
        uvicorn.run(
            create_app(settings, snapshot=path),
            host=host,
            port=port,
            log_level=settings.logging.level.lower(),
            access_log=False,
        )
