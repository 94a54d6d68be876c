"""The FastAPI application: `create_app(settings)`, and `create_app_from_env()` for uvicorn workers.

Resources (models, event log, metrics) live only between lifespan start and shutdown, so
each uvicorn worker process opens its own: its own VW workspaces, its own segment writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cbloop.logs import configure_logging
from cbloop.settings import Settings, load_settings
from cbloop_service.deps import SECURITY_SCHEMES
from cbloop_service.errors import TranslateErrors, install_error_handlers
from cbloop_service.metrics import ServiceMetrics
from cbloop_service.middleware import BodySizeLimit, RequestMetrics
from cbloop_service.routes import include_routes, manual_openapi
from cbloop_service.routes.docs import install_docs
from cbloop_service.state import open_service

logger = logging.getLogger(__name__)


class ServiceApp(FastAPI):
    """FastAPI with a short path for the hot route.

    POST /v1/rank skips FastAPI's own middleware and router (about 25 us a request, more
    than scoring and logging a decision) and runs straight through the app's middleware
    list and the shared error translation to its endpoint. Everything else, the lifespan
    included, goes through FastAPI as usual.

    There is one middleware list, `user_middleware` (what `add_middleware` fills): the short
    path is built from it when FastAPI builds its own stack, so a middleware added to the
    app also runs on the short route, in the same order.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._short_routes: dict[tuple[str, str], Route] = {}
        self._short: dict[tuple[str, str], tuple[Route, ASGIApp]] = {}

    def add_short_route(self, route: Route) -> None:
        """Serve `route` (also registered normally) through the middleware list directly."""
        self.router.routes.append(route)
        for method in route.methods or ():
            self._short_routes[(method, route.path)] = route

    def build_middleware_stack(self) -> ASGIApp:
        self._short = {
            key: (route, self._wrap(TranslateErrors(route.app)))
            for key, route in self._short_routes.items()
        }
        return super().build_middleware_stack()

    def _wrap(self, app: ASGIApp) -> ASGIApp:
        # As Starlette builds its stack: the first entry of the list is the outermost.
        for cls, args, kwargs in reversed(self.user_middleware):
            app = cls(app, *args, **kwargs)
        return app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.middleware_stack is None:
            self.middleware_stack = self.build_middleware_stack()
        if scope["type"] == "http":
            short = self._short.get((scope["method"], scope["path"]))
            if short is not None:
                scope["app"] = self
                scope["route"] = short[0]
                await short[1](scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    metrics = ServiceMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Loading models and recovering orphan segments is blocking I/O; a thread keeps
        # the loop (and uvicorn's own startup handling) responsive meanwhile.
        service = await asyncio.to_thread(open_service, settings, metrics)
        app.state.service = service
        logger.info("service ready", extra={"experiments": sorted(settings.experiments)})
        try:
            yield
        finally:
            app.state.service = None
            await asyncio.to_thread(service.close)

    app = ServiceApp(
        title="cbloop",
        summary="Contextual-bandit decisions: rank, reward, activate.",
        version="1",
        lifespan=lifespan,
        # Served by install_docs from local files: FastAPI's pages need a CDN.
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = None
    install_error_handlers(app)
    install_docs(app)
    include_routes(app)
    _complete_openapi(app)
    # Added last = outermost: metrics see every answer, including the 413s of the limit.
    app.add_middleware(BodySizeLimit, limit=settings.service.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics, routes=lambda: app.routes)
    return app


def _complete_openapi(app: FastAPI) -> None:
    """Add what FastAPI does not generate: security schemes and the hand-served routes."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # also caches it in app.openapi_schema
            paths, schemas = manual_openapi()
            schema.setdefault("paths", {}).update(paths)
            components = schema.setdefault("components", {})
            for name, definition in schemas.items():
                components.setdefault("schemas", {}).setdefault(name, definition)
            components["securitySchemes"] = SECURITY_SCHEMES
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """uvicorn factory: settings from $CBLOOP_CONFIG (or ./config.yaml) and the environment."""
    settings = load_settings()
    configure_logging(settings.logging)
    return create_app(settings)
