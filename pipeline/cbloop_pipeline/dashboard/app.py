"""The dashboard web app: read-only pages and a JSON API over the published snapshot.

Every route is a GET; nothing here writes anything but a login cookie. When
`service.admin_api_keys` is set, every route but /healthz needs one of those keys: in an
`X-API-Key` header, as `Authorization: Bearer`, or once as `?key=` (which sets a cookie and
redirects to the same page without it).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response

from cbloop.errors import CbloopError, InvalidInput
from cbloop.settings import Settings
from cbloop_pipeline.dashboard import charts
from cbloop_pipeline.dashboard.pages import Pages
from cbloop_pipeline.dashboard.queries import UnknownExperiment, UnknownModel
from cbloop_pipeline.dashboard.reader import SnapshotMissing, SnapshotReader
from cbloop_pipeline.dashboard.render import STATIC_DIR, Renderer
from cbloop_pipeline.dashboard.snapshot import snapshot_path

COOKIE = "cbloop_dashboard_key"
OPEN_PATHS = frozenset({"/healthz"})


def create_app(settings: Settings, *, snapshot: Path | None = None) -> FastAPI:
    path = snapshot if snapshot is not None else snapshot_path(settings.warehouse)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reader = SnapshotReader(path)
        app.state.reader = reader
        app.state.pages = Pages(settings)
        app.state.renderer = Renderer()
        try:
            yield
        finally:
            reader.close()

    app = FastAPI(
        title="cbloop dashboard",
        lifespan=lifespan,
        docs_url="/api/docs",
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    _install_auth(app, list(settings.service.admin_api_keys))
    _install_errors(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _install_routes(app)
    return app


# -- dependencies ------------------------------------------------------------------------------


def snapshot_cursor(request: Request) -> duckdb.DuckDBPyConnection:
    reader: SnapshotReader = request.app.state.reader
    return reader.cursor()


def pages(request: Request) -> Pages:
    result: Pages = request.app.state.pages
    return result


def _html(request: Request, template: str, context: dict[str, Any]) -> HTMLResponse:
    renderer: Renderer = request.app.state.renderer
    return HTMLResponse(renderer.render(template, request.url.path, context))


Cursor = Depends(snapshot_cursor)
PagesDep = Depends(pages)


# -- routes ------------------------------------------------------------------------------------


def _install_routes(app: FastAPI) -> None:
    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def overview_page(
        request: Request, con: duckdb.DuckDBPyConnection = Cursor, p: Pages = PagesDep
    ) -> HTMLResponse:
        return _html(request, "overview.html", p.overview(con))

    @app.get("/experiments/{name}", response_class=HTMLResponse, include_in_schema=False)
    def experiment_page(
        request: Request,
        name: str,
        con: duckdb.DuckDBPyConnection = Cursor,
        p: Pages = PagesDep,
    ) -> HTMLResponse:
        return _html(request, "experiment.html", p.experiment(con, name))

    @app.get(
        "/experiments/{name}/models/{model_id}",
        response_class=HTMLResponse,
        include_in_schema=False,
    )
    def model_page(
        request: Request,
        name: str,
        model_id: str,
        con: duckdb.DuckDBPyConnection = Cursor,
        p: Pages = PagesDep,
    ) -> HTMLResponse:
        return _html(request, "model.html", p.model(con, name, model_id))

    @app.get("/api/overview")
    def overview_api(con: duckdb.DuckDBPyConnection = Cursor, p: Pages = PagesDep) -> Any:
        return p.overview(con)

    @app.get("/api/experiments/{name}")
    def experiment_api(
        name: str, con: duckdb.DuckDBPyConnection = Cursor, p: Pages = PagesDep
    ) -> Any:
        return p.experiment(con, name)

    @app.get("/api/experiments/{name}/charts/{chart}")
    def chart_api(
        name: str, chart: str, con: duckdb.DuckDBPyConnection = Cursor, p: Pages = PagesDep
    ) -> Any:
        p.require(con, name)
        build = charts.EXPERIMENT_CHARTS.get(chart)
        if build is None:
            raise InvalidInput(
                f"unknown chart {chart!r}; one of {', '.join(charts.EXPERIMENT_CHARTS)}"
            )
        return build(con, name)

    @app.get("/api/experiments/{name}/models/{model_id}")
    def model_api(
        name: str, model_id: str, con: duckdb.DuckDBPyConnection = Cursor, p: Pages = PagesDep
    ) -> Any:
        return p.model(con, name, model_id)

    @app.get("/api/experiments/{name}/models/{model_id}/charts/estimates")
    def model_chart_api(
        name: str, model_id: str, con: duckdb.DuckDBPyConnection = Cursor, p: Pages = PagesDep
    ) -> Any:
        return p.model(con, name, model_id)["charts"]["estimates"]


# -- edges: errors and keys --------------------------------------------------------------------


def _install_errors(app: FastAPI) -> None:
    statuses: list[tuple[type[CbloopError], int]] = [
        (UnknownExperiment, 404),
        (UnknownModel, 404),
        (SnapshotMissing, 503),
        (InvalidInput, 400),
        (CbloopError, 500),
    ]

    async def handle(request: Request, exc: Exception) -> Response:
        status = next(code for cls, code in statuses if isinstance(exc, cls))
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": type(exc).__name__, "detail": str(exc)}, status)
        renderer: Renderer = request.app.state.renderer
        body = renderer.render(
            "error.html", request.url.path, {"status": status, "message": str(exc)}
        )
        return HTMLResponse(body, status)

    for cls, _ in statuses:
        app.add_exception_handler(cls, handle)


def _key_of(request: Request) -> str | None:
    header = request.headers.get("x-api-key")
    if header:
        return header
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(COOKIE)


def _valid(key: str | None, keys: list[str]) -> bool:
    return key is not None and any(hmac.compare_digest(key.encode(), k.encode()) for k in keys)


def _install_auth(app: FastAPI, keys: list[str]) -> None:
    if not keys:
        return

    @app.middleware("http")
    async def admin_key(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path in OPEN_PATHS:
            return await call_next(request)
        login = request.query_params.get("key")
        if login is not None:
            if not _valid(login, keys):
                return _denied(request, 403, "that key is not an admin key")
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "key"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, login, httponly=True, samesite="strict")
            return response
        key = _key_of(request)
        if key is None:
            return _denied(request, 401, "an admin key is required")
        if not _valid(key, keys):
            return _denied(request, 403, "that key is not an admin key")
        return await call_next(request)


def _denied(request: Request, status: int, message: str) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse(
            {
                "error": "Unauthorized" if status == 401 else "Forbidden",
                "detail": f"{message} (X-API-Key header or Authorization: Bearer)",
            },
            status,
        )
    renderer: Renderer = request.app.state.renderer
    return HTMLResponse(
        renderer.render("login.html", request.url.path, {"status": status, "message": message}),
        status,
    )
