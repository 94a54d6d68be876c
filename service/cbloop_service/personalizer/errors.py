"""Personalizer's error shape for the Personalizer routes, translated in one place.

Personalizer answered failures as `{"error": {"code", "message", "innerError"?}}` with 400
for anything wrong in a request (its `BadRequest` family; the swagger of 2022-09-01-preview
names the finer codes such as `InvalidRankRequest`, sent here as `innerError.code`), 401 for
a missing or wrong key, 404 `ResourceNotFound`, 500 `InternalServerError`. The routes of this
package are served by `PersonalizerRoute`, which catches cbloop's own exceptions (the same
ones the native API raises) and answers them in that shape, so the native API's answers
stay exactly as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from cbloop.errors import CbloopError, ConfigError, InvalidInput, TransientError
from cbloop.experiments import ExperimentConflict, ExperimentNotFound
from cbloop.personalizer_features import FeatureMappingError
from cbloop.sampling import InvalidPmf
from cbloop_service.errors import (
    NotAuthenticated,
    NotAuthorized,
    ServiceError,
    validation_detail,
)

logger = logging.getLogger(__name__)


class PersonalizerError(CbloopError):
    """A failure answered as `status` with Personalizer `code` (and `inner` detail code)."""

    def __init__(self, status: int, code: str, message: str, inner: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner = inner


def bad_request(message: str, inner: str | None = None) -> PersonalizerError:
    return PersonalizerError(400, "BadRequest", message, inner)


def not_found(message: str) -> PersonalizerError:
    return PersonalizerError(404, "ResourceNotFound", message)


def not_implemented(message: str, code: str = "NotImplemented") -> PersonalizerError:
    return PersonalizerError(501, code, message)


def error_response(
    status: int, code: str, message: str, inner: str | None = None, headers: Any = None
) -> Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner is not None:
        error["innerError"] = {"code": inner}
    return Response(
        orjson.dumps({"error": error}),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def translate(exc: Exception, inner: str | None) -> Response | None:
    """The Personalizer answer for `exc`, or None when it is not one of ours (a bug)."""
    if isinstance(exc, PersonalizerError):
        return error_response(exc.status, exc.code, exc.message, exc.inner)
    if isinstance(exc, RequestValidationError):
        return error_response(400, "BadRequest", validation_detail(exc), inner)
    if isinstance(exc, FeatureMappingError):
        return error_response(400, "BadRequest", str(exc), inner)
    if isinstance(exc, NotAuthenticated):
        # What Azure's gateway said for a missing or wrong Ocp-Apim-Subscription-Key.
        return error_response(
            401,
            "401",
            "Access denied due to invalid subscription key: send a cbloop API key in the "
            "Ocp-Apim-Subscription-Key header",
        )
    if isinstance(exc, NotAuthorized):
        return error_response(403, "403", "this operation needs an admin API key")
    if isinstance(exc, ServiceError):
        status = exc.status_code
        if status == 404:
            return error_response(404, "ResourceNotFound", exc.message)
        if status == 503:
            return error_response(503, "ServiceUnavailable", exc.message)
        if status == 413:
            return error_response(413, "PayloadSizeExceeded", exc.message)
        detail = f"{exc.field}: {exc.message}" if exc.field else exc.message
        return error_response(400, "BadRequest", detail, inner)
    if isinstance(exc, ExperimentNotFound):
        return error_response(404, "ResourceNotFound", str(exc))
    if isinstance(exc, ExperimentConflict):
        return error_response(409, "OperationNotAllowed", str(exc))
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 404:
            return error_response(404, "ResourceNotFound", str(exc.detail))
        return error_response(exc.status_code, "BadRequest", str(exc.detail))
    if isinstance(exc, InvalidPmf):
        logger.error("policy returned an invalid pmf", exc_info=exc)
        return error_response(503, "ServiceUnavailable", f"policy: {exc}")
    if isinstance(exc, InvalidInput | ConfigError):
        return error_response(400, "BadRequest", str(exc), inner)
    if isinstance(exc, TransientError):
        logger.warning("transient failure on a Personalizer route", exc_info=exc)
        return error_response(503, "ServiceUnavailable", str(exc))
    if isinstance(exc, CbloopError):
        logger.error("Personalizer route failed", exc_info=exc)
        return error_response(500, "InternalServerError", str(exc))
    return None


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class PersonalizerRoute(APIRoute):
    """An APIRoute whose failures (body parsing included) get Personalizer's error shape.

    The operation's finer Personalizer code (e.g. `InvalidRankRequest`) comes from the
    route's `openapi_extra["x-personalizer-error"]`.
    """

    def get_route_handler(self) -> Endpoint:
        handler = super().get_route_handler()
        inner = (self.openapi_extra or {}).get("x-personalizer-error")

        async def translated(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                response = translate(exc, inner)
                if response is None:
                    raise
                return response

        return translated
