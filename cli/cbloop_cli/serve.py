"""`cbloop serve`: the HTTP service under uvicorn with N worker processes."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer

from cbloop_cli.common import ConfigOption, settings_from

logger = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        port: Annotated[
            int | None,
            typer.Option("--port", help="Port (default: service.port)", min=1, max=65535),
        ] = None,
        workers: Annotated[
            int | None,
            typer.Option("--workers", help="Worker processes (default: service.workers)", min=1),
        ] = None,
        host: Annotated[str | None, typer.Option("--host", help="Default: service.host")] = None,
        config: ConfigOption = None,
    ) -> None:
        """Serve rank/reward/activate; every worker keeps its own models and log segments."""
        import uvicorn

        from cbloop.registry import ModelRegistry
        from cbloop.storage import open_store

        settings = settings_from(config)
        # Done once here, before any worker exists, so that workers never race to create
        # an experiment's first model.
        registry = ModelRegistry(open_store(settings.storage))
        for name, experiment in settings.experiments.items():
            pointer = registry.ensure_initial_model(name, experiment)
            logger.info(
                "experiment ready", extra={"experiment": name, "model_id": pointer.model_id}
            )
        if config is not None:
            # Workers are fresh processes (spawn): they find the settings through this.
            os.environ["CBLOOP_CONFIG"] = str(config.resolve())
        uvicorn.run(
            "cbloop_service.app:create_app_from_env",
            factory=True,
            host=host or settings.service.host,
            port=port or settings.service.port,
            workers=workers or settings.service.workers,
            # Our own logging (configured per worker) replaces uvicorn's; access lines per
            # request would cost more than a decision does.
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
        )
