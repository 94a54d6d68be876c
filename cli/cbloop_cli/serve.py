"""`cbloop serve`: the HTTP service under uvicorn with N worker processes."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from cbloop_cli.common import ConfigOption
from cbloop_cli.errors import fail
from cbloop_cli.experiments import catalog_settings_from

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

        settings = catalog_settings_from(config)
        bind_host = host or settings.service.host
        bind_port = port or settings.service.port
        _check_port(bind_host, bind_port)
        # Done once here, before any worker exists, so that workers never race to seed the
        # catalog or to create an experiment's first model.
        registry = ModelRegistry(open_store(settings.storage))
        for name, experiment in settings.experiments.items():
            pointer = registry.ensure_initial_model(name, experiment)
            logger.info(
                "experiment ready", extra={"experiment": name, "model_id": pointer.model_id}
            )
        if config is not None:
            # Workers are fresh processes (spawn): they find the settings through this.
            os.environ["CBLOOP_CONFIG"] = str(config.resolve())
        n_workers = workers or settings.service.workers
        with _shared_metrics(n_workers):
            uvicorn.run(
                "cbloop_service.app:create_app_from_env",
                factory=True,
                host=bind_host,
                port=bind_port,
                workers=n_workers,
                # Our own logging (configured per worker) replaces uvicorn's; access lines
                # per request would cost more than a decision does.
                log_config=None,
                access_log=False,
                timeout_graceful_shutdown=10,
            )


def _check_port(host: str, port: int) -> None:
    """Fail with one line when the address is taken, instead of uvicorn's traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: a port in TIME_WAIT is usable, one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                fail(
                    f"port {port} on {host} is already in use; choose another with --port "
                    f"or CBLOOP_SERVICE__PORT",
                    code=1,
                )
            fail(f"cannot listen on {host}:{port}: {exc.strerror}", code=1)


@contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """With several workers, a fresh folder for prometheus' multiprocess mode, for this run.

    Workers are spawned processes that inherit the variable, so each one writes its values
    there and /metrics (any worker) reads them all. Fresh per run: values of an earlier run
    must not add up with this one's. One worker serves in this process and needs none.
    """
    if workers < 2:
        yield
        return
    folder = tempfile.mkdtemp(prefix="cbloop-metrics-")
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = folder
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(folder, ignore_errors=True)


#: prometheus_client's variable (kept here so the CLI need not import the service to start).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
