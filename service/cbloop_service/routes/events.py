"""POST /v1/events/{event_id}/reward and /activate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path
from starlette.responses import Response

from cbloop_service.deps import API_KEY_SECURITY, ClientService
from cbloop_service.ranking import check_reward, record_outcome
from cbloop_service.routes._responses import errors
from cbloop_service.schemas import (
    EVENT_ID_PATTERN,
    MAX_EVENT_ID_LENGTH,
    OutcomeAccepted,
    RewardRequest,
)

router = APIRouter(tags=["outcomes"])

EventIdPath = Annotated[
    str, Path(min_length=1, max_length=MAX_EVENT_ID_LENGTH, pattern=EVENT_ID_PATTERN)
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=256,
        description="Logged with the outcome so the join can drop client retries.",
    ),
]


def _accepted(event_id: str, kind: str) -> Response:
    body = OutcomeAccepted(event_id=event_id, kind=kind).model_dump_json()
    return Response(body, status_code=202, media_type="application/json")


@router.post(
    "/v1/events/{event_id}/reward",
    status_code=202,
    response_model=OutcomeAccepted,
    openapi_extra=API_KEY_SECURITY,
    responses=errors(400, 401, 404, 413, 422, 503),
)
async def reward(
    event_id: EventIdPath,
    body: RewardRequest,
    service: ClientService,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Record a reward; it may arrive before its decision is visible anywhere.

    A value outside the experiment's `reward.min`/`reward.max` is refused (422) and not
    logged: one huge reward would turn the learned model into NaN.
    """
    check_reward(body.value, body.experiment, service.settings)
    record_outcome(service.event_log.outcomes, event_id, "reward", body.value, idempotency_key)
    return _accepted(event_id, "reward")


@router.post(
    "/v1/events/{event_id}/activate",
    status_code=202,
    response_model=OutcomeAccepted,
    openapi_extra=API_KEY_SECURITY,
    responses=errors(401, 422, 503),
)
async def activate(
    event_id: EventIdPath, service: ClientService, idempotency_key: IdempotencyKey = None
) -> Response:
    """Activate a decision made with defer_activation."""
    record_outcome(service.event_log.outcomes, event_id, "activate", None, idempotency_key)
    return _accepted(event_id, "activate")
