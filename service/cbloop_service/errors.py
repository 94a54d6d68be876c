"""Domain errors and the one place they become HTTP answers.

Routes and domain code raise these exceptions and never build error responses; the
handlers installed by `install_error_handlers` give every failure the same body shape:
`{"error": <code>, "detail": <message naming the field>, "errors": [{field, message}]}`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cbloop.errors import CbloopError, InvalidInput, TransientError
from cbloop.eventlog import EventLogError
from cbloop.experiments import (
    ExperimentConflict,
    ExperimentExists,
    ExperimentNotFound,
    InvalidExperiment,
)
from cbloop.sampling import InvalidPmf
from cbloop.storage import StorageError

logger = logging.getLogger(__name__)


class ServiceError(CbloopError):
    """A request the service will not carry out; `field` names the input at fault."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class UnknownExperiment(ServiceError, InvalidInput):
    status_code = 404
    code = "unknown_experiment"

    def __init__(self, experiment: str) -> None:
        super().__init__(f"experiment {experiment!r} is not configured", field="experiment")


class ArchivedExperiment(ServiceError, InvalidInput):
    status_code = 404
    code = "experiment_archived"

    def __init__(self, experiment: str) -> None:
        super().__init__(
            f"experiment {experiment!r} is archived; create it again to serve it",
            field="experiment",
        )


class AllActionsExcluded(ServiceError, InvalidInput):
    status_code = 422
    code = "all_actions_excluded"

    def __init__(self) -> None:
        super().__init__("every action is excluded", field="excluded_actions")


class LimitExceeded(ServiceError, InvalidInput):
    status_code = 422
    code = "limit_exceeded"


class RewardOutOfRange(ServiceError, InvalidInput):
    status_code = 422
    code = "reward_out_of_range"

    def __init__(self, value: float, low: float, high: float, where: str) -> None:
        super().__init__(
            f"reward {value:g} is outside [{low:g}, {high:g}] ({where})", field="value"
        )


class BodyTooLarge(ServiceError, InvalidInput):
    status_code = 413
    code = "body_too_large"

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes", field="body")


class NotAuthenticated(ServiceError, InvalidInput):
    status_code = 401
    code = "not_authenticated"

    def __init__(self) -> None:
        super().__init__("a valid API key is required (X-API-Key or Authorization: Bearer)")


class NotAuthorized(ServiceError, InvalidInput):
    status_code = 403
    code = "not_authorized"

    def __init__(self) -> None:
        super().__init__("this route needs an admin API key")


class ServiceUnavailable(ServiceError, TransientError):
    status_code = 503
    code = "unavailable"


def error_body(code: str, detail: str, errors: Sequence[tuple[str, str]] = ()) -> bytes:
    return orjson.dumps(
        {
            "error": code,
            "detail": detail,
            "errors": [{"field": f, "message": m} for f, m in errors],
        }
    )


def _json(status: int, body: bytes, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def _field_path(loc: Sequence[Any]) -> str:
    # loc is ("body", "context", "user", "age") or ("path", "event_id"); the first element
    # says where, the rest is the field a client recognises.
    parts = [str(p) for p in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    text = ""
    for part in parts:
        if part == "[key]":
            text += " (name)"
        elif part.isdigit():
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or "body"


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    detail = f"{exc.field}: {exc.message}" if exc.field else exc.message
    errors = [(exc.field, exc.message)] if exc.field else []
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, NotAuthenticated) else None
    return _json(exc.status_code, error_body(exc.code, detail, errors), headers)


def _invalid_json_detail(raw: list[dict[str, Any]]) -> str | None:
    """The detail for a body that is not JSON at all, None when it is JSON."""
    if not any(err.get("type") == "json_invalid" for err in raw):
        return None
    reason = next(
        (str(e.get("ctx", {}).get("error", "")) for e in raw if e.get("type") == "json_invalid"),
        "",
    )
    return f"body: not valid JSON ({reason})" if reason else "body: not valid JSON"


def _field_errors(raw: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(_field_path(err.get("loc", ())), _message(err)) for err in raw]


def validation_detail(exc: RequestValidationError) -> str:
    """The one-line detail an HTTP answer would carry, for callers off HTTP (batch)."""
    raw = list(exc.errors())
    invalid_json = _invalid_json_detail(raw)
    if invalid_json is not None:
        return invalid_json
    return "; ".join(f"{field}: {message}" for field, message in _field_errors(raw))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    invalid_json = _invalid_json_detail(raw)
    if invalid_json is not None:
        return _json(400, error_body("invalid_json", invalid_json, [("body", "not valid JSON")]))
    errors = _field_errors(raw)
    detail = "; ".join(f"{field}: {message}" for field, message in errors)
    return _json(422, error_body("invalid_request", detail, errors))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _json(exc.status_code, error_body(code, detail), dict(exc.headers or {}))


async def _event_log_error(request: Request, exc: Exception) -> Response:
    # The line did not reach the OS, so the client must not believe it was recorded.
    logger.error("event log write failed", exc_info=exc)
    return _json(503, error_body("event_log_unavailable", f"event log: {exc}"))


async def _invalid_pmf(request: Request, exc: Exception) -> Response:
    logger.error("policy returned an invalid pmf", exc_info=exc)
    return _json(503, error_body("policy_unavailable", f"policy: {exc}"))


async def _storage_error(request: Request, exc: Exception) -> Response:
    logger.error("object store failed", exc_info=exc)
    return _json(503, error_body("storage_unavailable", f"storage: {exc}"))


async def _transient(request: Request, exc: Exception) -> Response:
    logger.warning("transient failure", exc_info=exc)
    return _json(503, error_body("unavailable", str(exc)))


async def _invalid_input(request: Request, exc: Exception) -> Response:
    return _json(422, error_body("invalid_input", str(exc)))


async def _invalid_experiment(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidExperiment)
    return _json(422, error_body("invalid_experiment", str(exc), exc.errors))


async def _experiment_not_found(request: Request, exc: Exception) -> Response:
    return _json(404, error_body("unknown_experiment", str(exc), [("name", str(exc))]))


async def _experiment_conflict(request: Request, exc: Exception) -> Response:
    return _json(409, error_body("experiment_conflict", str(exc), [("name", str(exc))]))


async def _cbloop_error(request: Request, exc: Exception) -> Response:
    # A domain failure no row above names: the server's fault, not the client's.
    logger.error("request failed", exc_info=exc)
    return _json(500, error_body("internal_error", str(exc)))


Handler = Callable[[Request, Exception], Awaitable[Response]]

#: Exception type -> handler: the whole translation of failures to HTTP answers. The most
#: specific class wins (as in Starlette), so the cbloop categories at the end catch what the
#: rows above them do not name.
HANDLERS: dict[type[Exception], Handler] = {
    ServiceError: _service_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
    EventLogError: _event_log_error,
    InvalidPmf: _invalid_pmf,
    InvalidExperiment: _invalid_experiment,
    ExperimentNotFound: _experiment_not_found,
    ExperimentExists: _experiment_conflict,
    ExperimentConflict: _experiment_conflict,
    StorageError: _storage_error,
    TransientError: _transient,
    InvalidInput: _invalid_input,
    CbloopError: _cbloop_error,
}


def handler_for(exc: Exception) -> Handler | None:
    """The handler of the nearest class of `exc` in HANDLERS (None: not ours to answer)."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return handler
    return None


def install_error_handlers(app: FastAPI) -> None:
    for exc_type, handler in HANDLERS.items():
        app.add_exception_handler(exc_type, handler)


class TranslateErrors:
    """The same translation around an ASGI app that runs outside FastAPI's stack."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sender(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sender)
        except tuple(HANDLERS) as exc:
            if started:
                raise
            handler = handler_for(exc)
            assert handler is not None  # every class caught above has a row
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
