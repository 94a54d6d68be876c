"""POST /v1/rank.

The one hot route is a bare ASGI endpoint rather than a FastAPI path operation: FastAPI's
per-request machinery (json.loads, then validating the Python objects, resolving
dependencies, wrapping the response) cost more than scoring and logging the decision.
This endpoint validates the raw bytes once with pydantic's JSON parser, checks the key
with the same function the FastAPI dependencies use, and sends pre-serialized JSON.
Errors are raised as usual and answered by the handlers in service.errors (the app runs
it behind `TranslateErrors`, see service.app.ServiceApp). `openapi_paths` documents it
from the same models.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic.json_schema import models_json_schema
from starlette.requests import HTTPConnection
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cbloop_service.deps import API_KEY_SECURITY, authorized_client
from cbloop_service.ranking import check_limits, rank
from cbloop_service.routes._responses import ERROR_TEXT
from cbloop_service.schemas import ErrorBody, RankRequest, RankResponse, parse_body

PATH = "/v1/rank"
_ERROR_CODES = (400, 401, 404, 413, 422, 503)
_JSON = (b"content-type", b"application/json")


class RankEndpoint:
    """Choose one action for a context; the decision is logged before the answer is sent."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        service = authorized_client(HTTPConnection(scope))
        raw = await _read_body(receive)
        if raw is None:
            return  # the client left before sending its body: nobody to answer
        body = parse_body(RankRequest, raw)
        check_limits(body, service.settings.service)
        decision = rank(body, service.policies.get(body.experiment), service.event_log.decisions)
        payload = orjson.dumps(decision.answer())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [_JSON, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


rank_actions = RankEndpoint()


def route() -> Route:
    """The route, for the app's short path (see service.app.ServiceApp)."""
    # Route (unlike add_route) is typed for an ASGI-app endpoint, which it serves as is.
    return Route(PATH, rank_actions, methods=["POST"], name="rank_actions", include_in_schema=False)


def openapi_paths() -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, component schemas) documenting this route as FastAPI would."""
    _, top = models_json_schema(
        [
            (RankRequest, "validation"),
            (RankResponse, "serialization"),
            (ErrorBody, "serialization"),
        ],
        ref_template="#/components/schemas/{model}",
    )

    def ref(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

    responses: dict[str, Any] = {
        "200": {"description": "The decision", "content": ref("RankResponse")}
    }
    for code in _ERROR_CODES:
        responses[str(code)] = {"description": ERROR_TEXT[code], "content": ref("ErrorBody")}
    operation = {
        "tags": ["decisions"],
        "summary": "Rank Actions",
        "description": RankEndpoint.__doc__,
        "operationId": "rank_actions_v1_rank_post",
        "requestBody": {"required": True, "content": ref("RankRequest")},
        "responses": responses,
        **API_KEY_SECURITY,
    }
    return {PATH: {"post": operation}}, top["$defs"]
