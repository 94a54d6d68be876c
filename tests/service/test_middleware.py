"""One middleware list: what the app adds with `add_middleware` also runs on the rank short path."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from service_helpers import rank_body
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cbloop.settings import Settings
from cbloop_service.app import create_app


class Stamp:
    """A throwaway middleware: records each request it sees and stamps each answer."""

    def __init__(self, app: ASGIApp, seen: list[str]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.seen.append(f"{scope['method']} {scope['path']}")

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-stamp", b"seen")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)


def test_a_middleware_added_to_the_app_runs_on_rank_and_on_the_other_routes(
    make_settings: Callable[..., Settings],
) -> None:
    seen: list[str] = []
    app = create_app(make_settings(service={"max_body_bytes": 4096}))
    app.add_middleware(Stamp, seen=seen)

    with TestClient(app) as client:
        ranked = client.post("/v1/rank", json=rank_body())
        too_large = client.post(
            "/v1/rank",
            content=b"{" + b" " * 5000 + b"}",
            headers={"content-type": "application/json"},
        )
        health = client.get("/healthz")

    assert ranked.status_code == 200 and ranked.json()["action_id"].startswith("a")
    assert ranked.headers["x-stamp"] == "seen"
    # Added last, it is the outermost layer, as on FastAPI's stack: it sees the body limit's 413.
    assert too_large.status_code == 413 and too_large.headers["x-stamp"] == "seen"
    assert health.headers["x-stamp"] == "seen"
    assert seen == ["POST /v1/rank", "POST /v1/rank", "GET /healthz"]
