"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from cbloop_service.deps import API_KEY_SECURITY, AdminService, ServiceDep
from cbloop_service.metrics import CONTENT_TYPE
from cbloop_service.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process answers; says nothing about models or the log."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(service: ServiceDep) -> Response:
    """Ready when every experiment has a model loaded and the event log can take a line.

    The log check covers free space and the last write error, not only permissions. A
    model lagging its pointer is listed in `behind_pointer` but leaves the worker ready:
    taking every worker out of rotation over a store hiccup would turn a stale model
    into an outage.
    """
    holders = service.policies.holders
    models = {name: h.model.model_id for name, h in holders.items()}
    problem = service.event_log.unwritable_reason()
    writable = problem is None
    ready = writable and len(models) == len(service.settings.experiments)
    body = Readiness(
        ready=ready,
        models=models,
        log_writable=writable,
        log_problem=problem,
        behind_pointer=sorted(name for name, h in holders.items() if h.behind_pointer),
    ).model_dump_json()
    return Response(body, status_code=200 if ready else 503, media_type="application/json")


@router.get(
    "/metrics",
    openapi_extra=API_KEY_SECURITY,
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}},
)
async def metrics(service: AdminService) -> Response:
    """This worker's metrics (each worker process keeps its own)."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)
