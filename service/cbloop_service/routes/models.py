"""GET /v1/experiments/{experiment}/model (admin)."""

from __future__ import annotations

import os

from fastapi import APIRouter

from cbloop_service.deps import API_KEY_SECURITY, AdminService
from cbloop_service.routes._responses import errors
from cbloop_service.schemas import ModelInfo, RefusedModel

router = APIRouter(tags=["models"])


@router.get(
    "/v1/experiments/{experiment}/model",
    response_model=ModelInfo,
    openapi_extra=API_KEY_SECURITY,
    responses=errors(401, 403, 404, 422),
)
async def serving_model(experiment: str, service: AdminService) -> ModelInfo:
    """The model this worker serves for an experiment."""
    holder = service.policies.get(experiment)
    model = holder.model
    return ModelInfo(
        experiment=experiment,
        model_id=model.model_id,
        loaded_at=model.loaded_at,
        vw_args=model.vw_args,
        state=model.state,
        pointer_model_id=holder.pointer_model_id,
        refused=[
            RefusedModel(model_id=r.model_id, reason=r.reason, at=r.at) for r in holder.refusals()
        ],
        behind_pointer=holder.behind_pointer,
        watch_error=holder.watch_error,
        watch_error_at=holder.watch_error_at,
        worker_pid=os.getpid(),
    )
