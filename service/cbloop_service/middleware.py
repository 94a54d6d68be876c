"""Plain ASGI middleware (no BaseHTTPMiddleware: its task-per-request costs on the hot path)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cbloop_service.errors import BodyTooLarge, error_body
from cbloop_service.metrics import ServiceMetrics

UNMATCHED_ROUTE = "unmatched"


class BodySizeLimit:
    """413 for bodies over `limit` bytes, decided before anything parses them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None:
            if length > self.limit:
                await _reject(send, self.limit)
                return
            # The server stops at Content-Length, so the declared size is the real size.
            await self.app(scope, receive, send)
            return
        # Chunked or undeclared: read up to the limit ourselves, then replay it.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                # The client left; let the app see the disconnect.
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _reject(send, self.limit)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        await self.app(
            scope,
            _replay([{"type": "http.request", "body": body, "more_body": False}], receive),
            send,
        )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        # After the body, the server's own receive reports the disconnect when the client
        # really goes; answering it at once made streaming responses (files) stop empty.
        return await receive()

    return replayed


async def _reject(send: Send, limit: int) -> None:
    exc = BodyTooLarge(limit)
    body = error_body(exc.code, f"{exc.field}: {exc.message}", [("body", exc.message)])
    await send(
        {
            "type": "http.response.start",
            "status": exc.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestMetrics:
    """Counts and times every request by its route template (never the raw path)."""

    def __init__(
        self, app: ASGIApp, metrics: ServiceMetrics, routes: Callable[[], Sequence[BaseRoute]]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self._by_endpoint: dict[Any, str] = {}

    def _route_path(self, scope: Scope) -> str:
        path = getattr(scope.get("route"), "path", None)
        if path:
            return str(path)
        # Plain Starlette routes (the rank route) leave only their endpoint in the scope.
        endpoint = scope.get("endpoint")
        if endpoint is None:
            return UNMATCHED_ROUTE
        path = self._by_endpoint.get(endpoint)
        if path is None:
            path = next(
                (
                    str(getattr(r, "path", UNMATCHED_ROUTE))
                    for r in self.routes()
                    if getattr(r, "endpoint", None) is endpoint
                ),
                UNMATCHED_ROUTE,
            )
            self._by_endpoint[endpoint] = path
        return path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe_request(
                self._route_path(scope), scope["method"], status, time.perf_counter() - start
            )
