"""OpenAPI descriptions of the error answers routes share."""

from __future__ import annotations

from typing import Any

from cbloop_service.schemas import ErrorBody

ERROR_TEXT = {
    400: "Body is not valid JSON",
    401: "Missing or unknown API key",
    403: "Admin API key required",
    404: "Unknown experiment",
    409: "Conflicts with the experiment's state",
    413: "Body too large",
    422: "Invalid input; the message names the field",
    503: "Event log or policy unavailable",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": ERROR_TEXT[code]} for code in codes}
