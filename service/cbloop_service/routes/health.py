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
    """Ready when every experiment has a model loaded and the event log is writable."""
    models = {name: h.model.model_id for name, h in service.policies.holders.items()}
    writable = service.event_log.writable()
    ready = writable and len(models) == len(service.settings.experiments)
    body = Readiness(ready=ready, models=models, log_writable=writable).model_dump_json()
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
