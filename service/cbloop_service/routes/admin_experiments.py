"""/v1/admin/experiments: create, read, update and archive experiments at run time (admin).

The definitions live in the store (`cbloop.experiments`); every worker follows them within
`service.model_poll_seconds`, and the worker that answers a change applies it before
answering. Store I/O blocks, so these are plain `def` routes (FastAPI's thread pool).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from cbloop.experiments import ExperimentRecord
from cbloop_service.deps import API_KEY_SECURITY, AdminService, presented_key
from cbloop_service.routes._responses import errors
from cbloop_service.state import ServiceState

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin/experiments", tags=["experiments"])

NamePath = Annotated[
    str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
]
Why = Annotated[str, Field(min_length=1, max_length=2000, description="Why, for the history.")]
By = Annotated[
    str | None, Field(None, max_length=200, description="Who (default: the admin API key).")
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateExperiment(_Body):
    name: str = Field(min_length=1, max_length=128)
    #: Any subset of the experiment keys of config.yaml; the rest take their defaults.
    settings: dict[str, Any] = {}
    why: Why = "created"
    by: By = None
    evidence: dict[str, Any] | None = None


class UpdateExperiment(_Body):
    #: A partial settings mapping merged into the current one (nested keys merge).
    settings: dict[str, Any]
    why: Why
    by: By = None
    evidence: dict[str, Any] | None = None


class ArchiveExperiment(_Body):
    why: Why
    by: By = None


class ExperimentView(BaseModel):
    name: str
    version: int
    archived: bool
    settings: dict[str, Any]
    #: The full VW argument string the settings give (what models must have been built with).
    vw_arguments: str
    by: str
    at: str
    why: str
    evidence: dict[str, Any] | None
    fresh_model_reason: str | None
    fresh_model_id: str | None


class ExperimentList(BaseModel):
    experiments: list[ExperimentView]


class ExperimentHistory(BaseModel):
    name: str
    versions: list[ExperimentView]


def view(record: ExperimentRecord) -> ExperimentView:
    return ExperimentView(
        name=record.name,
        version=record.version,
        archived=record.archived,
        settings=record.settings,
        vw_arguments=record.experiment().vw_arguments(),
        by=record.by,
        at=record.at,
        why=record.why,
        evidence=record.evidence,
        fresh_model_reason=record.fresh_model_reason,
        fresh_model_id=record.fresh_model_id,
    )


def _who(request: Request, by: str | None) -> str:
    """The caller's name plus a fingerprint of its key (never the key itself)."""
    key = presented_key(request)
    who = by or "admin-api"
    if key is None:
        return who
    return f"{who} (key sha256:{hashlib.sha256(key.encode()).hexdigest()[:12]})"


def _applied(service: ServiceState, record: ExperimentRecord) -> ExperimentView:
    # This worker serves the change before it answers; the others follow within a poll.
    service.experiments.poll_safely()
    return view(record)


@router.get(
    "",
    response_model=ExperimentList,
    openapi_extra=API_KEY_SECURITY,
    responses=errors(401, 403, 503),
)
def list_experiments(
    service: AdminService,
    include_archived: Annotated[bool, Query(description="Also list archived ones.")] = False,
) -> ExperimentList:
    """Every experiment in the store, newest version of each."""
    records = service.catalog.list(include_archived=include_archived)
    return ExperimentList(experiments=[view(r) for r in records])


@router.post(
    "",
    status_code=201,
    response_model=ExperimentView,
    openapi_extra=API_KEY_SECURITY,
    responses=errors(401, 403, 409, 422, 503),
)
def create_experiment(
    body: CreateExperiment, request: Request, service: AdminService
) -> ExperimentView:
    """A new experiment; it serves on every worker within `service.model_poll_seconds`."""
    record = service.catalog.create(
        body.name, body.settings, by=_who(request, body.by), why=body.why, evidence=body.evidence
    )
    return _applied(service, record)


@router.get(
    "/{name}",
    response_model=ExperimentView,
    openapi_extra=API_KEY_SECURITY,
    responses=errors(401, 403, 404, 422, 503),
)
def show_experiment(name: NamePath, service: AdminService) -> ExperimentView:
    """The experiment's current version (archived ones too)."""
    return view(service.catalog.get(name))


@router.patch(
    "/{name}",
    response_model=ExperimentView,
    openapi_extra=API_KEY_SECURITY,
    responses=errors(401, 403, 404, 409, 422, 503),
)
def update_experiment(
    name: NamePath, body: UpdateExperiment, request: Request, service: AdminService
) -> ExperimentView:
    """Merge a partial settings mapping; an invalid result is a 422 and nothing changes.

    Changing the VW arguments starts a fresh model (`fresh_model_reason` says so).
    """
    record = service.catalog.update(
        name, body.settings, by=_who(request, body.by), why=body.why, evidence=body.evidence
    )
    return _applied(service, record)


@router.post(
    "/{name}/archive",
    response_model=ExperimentView,
    openapi_extra=API_KEY_SECURITY,
    responses=errors(401, 403, 404, 422, 503),
)
def archive_experiment(
    name: NamePath, body: ArchiveExperiment, request: Request, service: AdminService
) -> ExperimentView:
    """Stop serving and learning the experiment; its models and history stay."""
    record = service.catalog.archive(name, by=_who(request, body.by), why=body.why)
    return _applied(service, record)


@router.get(
    "/{name}/history",
    response_model=ExperimentHistory,
    openapi_extra=API_KEY_SECURITY,
    responses=errors(401, 403, 404, 422, 503),
)
def experiment_history(name: NamePath, service: AdminService) -> ExperimentHistory:
    """Every version, oldest first, with who, when and why."""
    return ExperimentHistory(name=name, versions=[view(r) for r in service.catalog.history(name)])
