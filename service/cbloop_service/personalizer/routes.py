"""Personalizer's REST API on cbloop: the same paths, bodies, status codes and error shape.

Served under each API version's base path: `/personalizer/v1.0`, `/personalizer/v1.1-preview.1`
to `.3`, and `/personalizer` with `?api-version=2022-09-01-preview` (what the current Python
SDK, azure-ai-personalizer, sends); and each of those again under `/experiments/{name}`,
which is experiment `{name}` (without it: `default`). So an app's Personalizer endpoint
`https://x.cognitiveservices.azure.com` becomes `http://host:port` or
`http://host:port/experiments/{name}`.

The key comes in `Ocp-Apim-Subscription-Key` (cbloop's `X-API-Key` and `Authorization:
Bearer` work too) and is checked like cbloop's own keys; configuration and model routes
need an admin key. Rank, reward and activate run the native API's own functions (limits,
encoder, seeded draw, decision line), so a Personalizer call logs what the equivalent
`/v1/rank` call logs.

Evaluations and feature importances are requests in the store (cbloop.evaluation_requests):
the routes write and read them, the learning loop runs them (the service never writes the
warehouse); their mapping is in personalizer.evaluations and personalizer.feature_importances.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from starlette.responses import Response

from cbloop import evaluation_requests as requests_store
from cbloop.clock import format_ts
from cbloop.evaluation_requests import (
    EVALUATIONS,
    FEATURE_IMPORTANCES,
    SUCCEEDED,
    EvaluationRequest,
)
from cbloop.personalizer_features import to_namespaces
from cbloop.registry import RegistryError
from cbloop_service.deps import presented_key
from cbloop_service.errors import ServiceUnavailable
from cbloop_service.personalizer import configuration as config_map
from cbloop_service.personalizer import evaluations as eval_map
from cbloop_service.personalizer import feature_importances as fi_map
from cbloop_service.personalizer import logs as logs_map
from cbloop_service.personalizer import models
from cbloop_service.personalizer.errors import (
    PersonalizerError,
    PersonalizerRoute,
    bad_request,
    not_found,
    not_implemented,
)
from cbloop_service.personalizer.paths import CollapseSlashes
from cbloop_service.personalizer.schemas import (
    EvaluationContract,
    FeatureImportanceContract,
    ModelProperties,
    PolicyContract,
    PolicyReferenceContract,
    RankedAction,
    RankRequest,
    RankResponse,
    RewardRequest,
    ServiceConfiguration,
)
from cbloop_service.personalizer.writer import CatalogWriter, ExperimentWriter
from cbloop_service.policy import ModelRefused
from cbloop_service.ranking import check_limits, check_reward, rank, record_outcome
from cbloop_service.schemas import EVENT_ID_PATTERN, parse_body
from cbloop_service.schemas import RankRequest as NativeRankRequest
from cbloop_service.state import ServiceState

KEY_HEADER = "ocp-apim-subscription-key"
VERSIONED_BASES = (
    "/personalizer/v1.0",
    "/personalizer/v1.1-preview.1",
    "/personalizer/v1.1-preview.2",
    "/personalizer/v1.1-preview.3",
)
UNVERSIONED_BASE = "/personalizer"
#: `api-version` values served on the unversioned base path.
API_VERSIONS = ("2022-09-01-preview",)
MULTI_SLOT_MESSAGE = (
    "multi-slot personalization is not supported by cbloop yet; use the single-slot "
    "rank, reward and activate routes"
)
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


def _code(code: str) -> dict[str, Any]:
    return {"x-personalizer-error": code}


# -- dependencies (all `async def`: FastAPI runs plain `def` ones in a thread pool) ----------
def _state(request: Request) -> ServiceState:
    service: ServiceState | None = request.app.state.service
    if service is None:
        raise ServiceUnavailable("the service is starting or stopping")
    return service


def _key(request: Request) -> str | None:
    return request.headers.get(KEY_HEADER) or presented_key(request)


async def _experiment(request: Request) -> str:
    return str(request.path_params.get("experiment", "default"))


async def client(request: Request) -> ServiceState:
    service = _state(request)
    if service.auth.client_key_required:
        service.auth.check_client(_key(request))
    return service


async def admin(request: Request) -> ServiceState:
    service = _state(request)
    service.auth.check_admin(_key(request))
    return service


@dataclass(frozen=True)
class _Page:
    skip: int
    top: int | None

    def of(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return items[self.skip :][: self.top] if self.top is not None else items[self.skip :]


async def _page(
    top: Annotated[int | None, Query(ge=0)] = None,
    skip: Annotated[int, Query(ge=0)] = 0,
) -> _Page:
    """The 2022 swagger's `top` and `skip` of its lists (`maxpagesize`: one page holds all)."""
    return _Page(skip, top)


Client = Annotated[ServiceState, Depends(client)]
Admin = Annotated[ServiceState, Depends(admin)]
Experiment = Annotated[str, Depends(_experiment)]
Page = Annotated[_Page, Depends(_page)]


async def _check_api_version(
    api_version: Annotated[str | None, Query(alias="api-version")] = None,
) -> None:
    if api_version not in API_VERSIONS:
        raise bad_request(
            f"api-version {api_version!r} is not served here; use one of "
            f"{', '.join(API_VERSIONS)} or a versioned path ({', '.join(VERSIONED_BASES)})"
        )


def _event_id(event_id: str) -> str:
    if not _EVENT_ID.fullmatch(event_id):
        raise bad_request(
            f"eventId {event_id[:60]!r}: use 1 to 256 of A-Z a-z 0-9 . _ : -",
            "InvalidEventId",
        )
    return event_id


def native_request(body: RankRequest, experiment: str) -> NativeRankRequest:
    """The `/v1/rank` body equal to a Personalizer rank body (features mapped, see features)."""
    native = {
        "experiment": experiment,
        "event_id": body.event_id,
        "context": to_namespaces(body.context_features, "contextFeatures"),
        "actions": [
            {"id": a.id, "features": to_namespaces(a.features, f"actions[{i}].features")}
            for i, a in enumerate(body.actions)
        ],
        "excluded_actions": body.excluded_actions or [],
        "defer_activation": bool(body.defer_activation),
    }
    return parse_body(NativeRankRequest, orjson.dumps(native))


def _json(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _v1(request: Request) -> bool:
    """Whether the call came on the v1.0 base path (whose status words differ)."""
    return "/personalizer/v1.0/" in request.url.path


def _writer(request: Request, service: ServiceState, why: str) -> ExperimentWriter:
    override: ExperimentWriter | None = getattr(request.app.state, "experiment_writer", None)
    if override is not None:
        return override
    key = _key(request)
    by = "personalizer-api"
    if key is not None:
        by += f" (key sha256:{hashlib.sha256(key.encode()).hexdigest()[:12]})"
    return CatalogWriter(service, by=by, why=why)


#: Words of each kind of stored request in answers: (text, error-code stem).
_KIND_WORDS = {
    EVALUATIONS: ("evaluation", "Evaluation"),
    FEATURE_IMPORTANCES: ("feature importance", "FeatureImportance"),
}


async def _store_new(service: ServiceState, req: EvaluationRequest, kind: str) -> None:
    """Write a new request: 409 when one has that id already."""
    text, stem = _KIND_WORDS[kind]
    store = service.registry.store
    existing = await asyncio.to_thread(
        requests_store.read_request, store, req.experiment, req.id, kind
    )
    if existing is not None:
        raise PersonalizerError(
            409, "Conflict", f"{text} {req.id!r} already exists", f"{stem}AlreadyExists"
        )
    await asyncio.to_thread(requests_store.write_request, store, req, kind)


async def _stored(
    service: ServiceState, experiment: str, request_id: str, kind: str
) -> tuple[EvaluationRequest, dict[str, Any] | None]:
    """A stored request and its result (None: pending); 404 when there is none."""
    text, stem = _KIND_WORDS[kind]
    service.policies.get(experiment)
    store = service.registry.store
    requests_store.check_id(request_id)
    req = await asyncio.to_thread(requests_store.read_request, store, experiment, request_id, kind)
    if req is None:
        raise PersonalizerError(
            404,
            "ResourceNotFound",
            f"no {text} {request_id!r} in experiment {experiment!r}",
            f"{stem}NotFound",
        )
    result = await asyncio.to_thread(
        requests_store.read_result, store, experiment, request_id, kind
    )
    return req, result


# -- routes ---------------------------------------------------------------------------------
def build_router() -> APIRouter:
    router = APIRouter(route_class=PersonalizerRoute, tags=["personalizer"])

    @router.post("/rank", status_code=201, openapi_extra=_code("InvalidRankRequest"))
    async def personalizer_rank(
        body: RankRequest, service: Client, experiment: Experiment
    ) -> Response:
        """Rank actions: 201 `{ranking, eventId, rewardActionId}`, the chosen action first."""
        native = native_request(body, experiment)
        check_limits(native, service.settings.service)
        decision = rank(native, service.policies.get(experiment), service.event_log.decisions)
        answer = RankResponse(
            ranking=[RankedAction(id=a, probability=p) for a, p in decision.ranking],
            event_id=decision.event_id,
            reward_action_id=decision.action_id,
        )
        return _json(answer.wire(), 201)

    @router.post(
        "/events/{eventId}/reward", status_code=204, openapi_extra=_code("InvalidRewardRequest")
    )
    async def personalizer_reward(
        eventId: str,
        body: RewardRequest,
        service: Client,
        experiment: Experiment,
    ) -> Response:
        """Record the reward of an event's rewardActionId: 204."""
        event_id = _event_id(eventId)
        service.policies.get(experiment)
        check_reward(body.value, experiment, service.settings)
        record_outcome(service.event_log.outcomes, event_id, "reward", body.value)
        return Response(status_code=204)

    @router.post(
        "/events/{eventId}/activate",
        status_code=204,
        openapi_extra=_code("InvalidEventIdToActivate"),
    )
    async def personalizer_activate(
        eventId: str,
        service: Client,
        experiment: Experiment,
    ) -> Response:
        """Activate an event ranked with deferActivation: 204."""
        event_id = _event_id(eventId)
        service.policies.get(experiment)
        record_outcome(service.event_log.outcomes, event_id, "activate")
        return Response(status_code=204)

    for path in ("/multislot/rank", "/multislot/events/{eventId}/reward",
                 "/multislot/events/{eventId}/activate"):  # fmt: skip

        @router.post(path, status_code=501, name=f"personalizer_multislot_{path}")
        async def personalizer_multislot(service: Client) -> Response:
            """Not supported yet: 501."""
            raise not_implemented(MULTI_SLOT_MESSAGE, "InvalidMultiSlotApiAccess")

    # -- configuration ----------------------------------------------------------------------
    @router.get("/configurations/service", response_model=None)
    async def personalizer_get_configuration(service: Admin, experiment: Experiment) -> Response:
        """The experiment's settings as Personalizer's service configuration."""
        holder = service.policies.get(experiment)
        return _json(config_map.service_configuration(service.settings, holder.settings).wire())

    @router.api_route(
        "/configurations/service",
        methods=["PUT", "PATCH"],
        openapi_extra=_code("InvalidServiceConfiguration"),
    )
    async def personalizer_update_configuration(
        body: ServiceConfiguration, service: Admin, experiment: Experiment, request: Request
    ) -> Response:
        """Change the experiment's settings from a Personalizer service configuration."""
        holder = service.policies.get(experiment)
        changes = config_map.configuration_changes(body, service.settings, holder.settings)
        writer = _writer(request, service, "Personalizer API: service configuration update")
        updated = holder.settings
        if changes:
            updated = await asyncio.to_thread(writer.apply, experiment, changes)
        return _json(config_map.service_configuration(service.settings, updated).wire())

    @router.get("/configurations/policy")
    async def personalizer_get_policy(service: Admin, experiment: Experiment) -> Response:
        """The experiment's VW arguments as Personalizer's policy."""
        holder = service.policies.get(experiment)
        return _json(config_map.policy(experiment, holder.settings).wire())

    @router.api_route(
        "/configurations/policy",
        methods=["PUT", "PATCH"],
        openapi_extra=_code("InvalidPolicyConfiguration"),
    )
    async def personalizer_update_policy(
        body: PolicyContract, service: Admin, experiment: Experiment, request: Request
    ) -> Response:
        """Replace the experiment's VW arguments and exploration (cbloop's whitelist applies)."""
        service.policies.get(experiment)
        changes = config_map.policy_changes(body.arguments)
        writer = _writer(request, service, "Personalizer API: policy update")
        updated = await asyncio.to_thread(writer.apply, experiment, changes)
        return _json(config_map.policy(experiment, updated).wire())

    @router.delete("/configurations/policy")
    async def personalizer_reset_policy(
        service: Admin, experiment: Experiment, request: Request
    ) -> Response:
        """Back to cbloop's default VW arguments and exploration."""
        service.policies.get(experiment)
        writer = _writer(request, service, "Personalizer API: policy reset")
        changes = config_map.policy_changes(config_map.DEFAULT_POLICY_ARGUMENTS)
        updated = await asyncio.to_thread(writer.apply, experiment, changes)
        return _json(config_map.policy(experiment, updated).wire())

    # -- model ------------------------------------------------------------------------------
    @router.get("/model")
    async def personalizer_export_model(
        service: Admin, experiment: Experiment, signed: bool = False
    ) -> Response:
        """The served VW model file (the registry's current model)."""
        service.policies.get(experiment)
        if signed:
            raise bad_request(
                "cbloop does not sign models; export with signed=false (the VW model file)"
            )
        with tempfile.TemporaryDirectory(prefix="cbloop-export-") as tmp:
            exported = await asyncio.to_thread(
                models.export_current, service.registry, experiment, Path(tmp)
            )
        return Response(
            exported.data,
            media_type="application/octet-stream",
            headers={"x-cbloop-model-id": exported.model_id},
        )

    @router.put("/model", status_code=204, openapi_extra=_code("InvalidModelImportFormat"))
    async def personalizer_import_model(
        request: Request, service: Admin, experiment: Experiment
    ) -> Response:
        """Make a VW model file the current model, once it passes the serving checks: 204."""
        holder = service.policies.get(experiment)
        data = await request.body()
        if not data:
            raise bad_request("the body must be a VW model file", "InvalidModelImportFormat")
        with tempfile.TemporaryDirectory(prefix="cbloop-import-") as tmp:
            path = Path(tmp) / "model.vw"
            path.write_bytes(data)
            try:
                await asyncio.to_thread(
                    models.import_model,
                    service.watcher.loader,
                    experiment,
                    holder.settings,
                    path,
                    note="imported through the Personalizer API",
                )
            except (models.IncompatibleModel, ModelRefused) as exc:
                raise bad_request(str(exc), "InvalidModelImportFormat") from exc
        return Response(status_code=204)

    @router.delete("/model", status_code=204, openapi_extra=_code("ModelResetFailed"))
    async def personalizer_reset_model(service: Admin, experiment: Experiment) -> Response:
        """Start the experiment again from an untrained model: 204."""
        holder = service.policies.get(experiment)
        await asyncio.to_thread(
            models.reset_model,
            service.registry,
            experiment,
            holder.settings,
            note="reset through the Personalizer API",
        )
        return Response(status_code=204)

    @router.get("/model/properties")
    async def personalizer_model_properties(service: Admin, experiment: Experiment) -> Response:
        """When the current model was made."""
        service.policies.get(experiment)
        pointer = await asyncio.to_thread(service.registry.current, experiment)
        if pointer is None:
            raise not_found(f"experiment {experiment!r} has no model yet")
        try:
            meta = await asyncio.to_thread(service.registry.metadata, experiment, pointer.model_id)
        except RegistryError as exc:
            raise not_found(str(exc)) from exc
        props = ModelProperties(
            creation_time=meta.created_at, last_modified_time=pointer.updated_at
        )
        return _json(props.wire())

    # -- evaluations (run by the learning loop; see personalizer.evaluations) -------------
    @router.post("/evaluations", status_code=201, openapi_extra=_code("InvalidEvaluationContract"))
    async def personalizer_create_evaluation(
        body: EvaluationContract, service: Admin, experiment: Experiment, request: Request
    ) -> Response:
        """Submit an offline evaluation (v1.0: the id is made here): 201, pending."""
        holder = service.policies.get(experiment)
        req = eval_map.new_request(body, eval_map.new_id(), experiment, holder.settings)
        await _store_new(service, req, EVALUATIONS)
        return _json(eval_map.evaluation(req, None, v1=_v1(request)), 201)

    @router.put(
        "/evaluations/{evaluationId}",
        status_code=200,
        openapi_extra=_code("InvalidEvaluationContract"),
    )
    async def personalizer_put_evaluation(
        evaluationId: str,
        body: EvaluationContract,
        service: Admin,
        experiment: Experiment,
        request: Request,
    ) -> Response:
        """Submit an offline evaluation under the caller's id (later versions): 200."""
        holder = service.policies.get(experiment)
        req = eval_map.new_request(body, evaluationId, experiment, holder.settings)
        await _store_new(service, req, EVALUATIONS)
        return _json(eval_map.evaluation(req, None, v1=_v1(request)))

    @router.get("/evaluations/{evaluationId}")
    async def personalizer_get_evaluation(
        evaluationId: str, service: Admin, experiment: Experiment, request: Request
    ) -> Response:
        """The evaluation and, once the loop has run it, its figures."""
        req, result = await _stored(service, experiment, evaluationId, EVALUATIONS)
        return _json(eval_map.evaluation(req, result, v1=_v1(request)))

    @router.get("/evaluations")
    async def personalizer_list_evaluations(
        service: Admin, experiment: Experiment, request: Request, page: Page
    ) -> Response:
        """The experiment's evaluations, oldest first (`skip`, then at most `top`)."""
        service.policies.get(experiment)
        store = service.registry.store
        ids = await asyncio.to_thread(requests_store.evaluation_ids, store, experiment, EVALUATIONS)
        v1 = _v1(request)
        items = []
        for evaluation_id in ids:
            req, result = await _stored(service, experiment, evaluation_id, EVALUATIONS)
            items.append(eval_map.details(req, result, v1=v1))
        items = page.of(sorted(items, key=lambda e: (e["creationTime"], e["id"])))
        return _json(items if v1 else {"value": items, "nextLink": None})

    @router.delete("/evaluations/{evaluationId}", status_code=204)
    async def personalizer_delete_evaluation(
        evaluationId: str, service: Admin, experiment: Experiment
    ) -> Response:
        """Remove the evaluation (request and figures): 204."""
        await _stored(service, experiment, evaluationId, EVALUATIONS)
        await asyncio.to_thread(
            requests_store.delete_evaluation,
            service.registry.store,
            experiment,
            evaluationId,
            EVALUATIONS,
        )
        return Response(status_code=204)

    @router.post(
        "/configurations/applyFromEvaluation",
        status_code=204,
        openapi_extra=_code("LearningSettingsNotFound"),
    )
    async def personalizer_apply_from_evaluation(
        body: PolicyReferenceContract, service: Admin, experiment: Experiment, request: Request
    ) -> Response:
        """Make an evaluated policy the experiment's VW arguments and exploration: 204."""
        req, result = await _stored(service, experiment, body.evaluation_id, EVALUATIONS)
        if result is None or result.get("status") != SUCCEEDED:
            raise bad_request(
                f"evaluation {req.id!r} has not succeeded; apply a policy once it has",
                "EvaluationModelNotFound",
            )
        if body.policy_name == eval_map.ONLINE_POLICY:
            return Response(status_code=204)  # the experiment's settings already
        policy = next((p for p in req.policies if p.name == body.policy_name), None)
        if policy is None:
            raise PersonalizerError(
                404,
                "ResourceNotFound",
                f"evaluation {req.id!r} has no policy {body.policy_name!r}",
                "LearningSettingsNotFound",
            )
        changes = config_map.policy_changes(policy.arguments)
        why = f"Personalizer API: policy {policy.name!r} of evaluation {req.id!r}"
        writer = _writer(request, service, why)
        await asyncio.to_thread(writer.apply, experiment, changes)
        return Response(status_code=204)

    # -- feature importances (run by the learning loop; see personalizer.feature_importances)
    @router.put(
        "/featureImportances/{featureImportanceId}",
        openapi_extra=_code("InvalidContract"),
    )
    async def personalizer_create_feature_importance(
        featureImportanceId: str,
        body: FeatureImportanceContract,
        service: Admin,
        experiment: Experiment,
    ) -> Response:
        """Submit a feature importance: 200, NotSubmitted until the loop has run it."""
        service.policies.get(experiment)
        requests_store.check_id(featureImportanceId)
        req = fi_map.new_request(body, featureImportanceId, experiment)
        await _store_new(service, req, FEATURE_IMPORTANCES)
        return _json(fi_map.feature_importance(req, None))

    @router.get("/featureImportances/{featureImportanceId}")
    async def personalizer_get_feature_importance(
        featureImportanceId: str, service: Admin, experiment: Experiment
    ) -> Response:
        """The feature importance and, once the loop has run it, its scores."""
        req, result = await _stored(service, experiment, featureImportanceId, FEATURE_IMPORTANCES)
        return _json(fi_map.feature_importance(req, result))

    @router.get("/featureImportances")
    async def personalizer_list_feature_importances(
        service: Admin, experiment: Experiment, page: Page
    ) -> Response:
        """The experiment's feature importances, oldest first (`skip`, then at most `top`)."""
        service.policies.get(experiment)
        ids = await asyncio.to_thread(
            requests_store.evaluation_ids, service.registry.store, experiment, FEATURE_IMPORTANCES
        )
        items = []
        for importance_id in ids:
            req, result = await _stored(service, experiment, importance_id, FEATURE_IMPORTANCES)
            items.append(fi_map.details(req, result))
        items = page.of(sorted(items, key=lambda e: (e["creationTime"], e["id"])))
        return _json({"value": items, "nextLink": None})

    @router.delete("/featureImportances/{featureImportanceId}", status_code=204)
    async def personalizer_delete_feature_importance(
        featureImportanceId: str, service: Admin, experiment: Experiment
    ) -> Response:
        """Remove the feature importance (request and scores): 204."""
        await _stored(service, experiment, featureImportanceId, FEATURE_IMPORTANCES)
        await asyncio.to_thread(
            requests_store.delete_evaluation,
            service.registry.store,
            experiment,
            featureImportanceId,
            FEATURE_IMPORTANCES,
        )
        return Response(status_code=204)

    # -- logs ---------------------------------------------------------------------------------
    @router.get("/logs/properties")
    async def personalizer_log_properties(service: Admin, experiment: Experiment) -> Response:
        """The span of the logged decisions, to the hour (see personalizer.logs)."""
        service.policies.get(experiment)
        span = await asyncio.to_thread(logs_map.date_range, service.registry.store)
        if span is None:
            return _json({"dateRange": {"from": None, "to": None}})
        return _json({"dateRange": {"from": format_ts(span[0]), "to": format_ts(span[1])}})

    # -- not in cbloop's Personalizer API yet -----------------------------------------------
    for path, methods in (
        ("/logs", ["DELETE"]),
        ("/logs/interactions", ["POST"]),
        ("/logs/observations", ["POST"]),
    ):

        @router.api_route(path, methods=methods, name=f"personalizer_todo_{path}")
        async def personalizer_not_yet(service: Admin, request: Request) -> Response:
            """Not served by cbloop's Personalizer API yet: 501."""
            raise not_implemented(
                f"{request.method} {request.url.path.rsplit('/personalizer', 1)[-1]} is not "
                "served by cbloop's Personalizer API yet: use the retention settings and "
                "`cbloop import`"
            )

    @router.api_route(
        "/{rest:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def personalizer_unknown(rest: str) -> Response:
        raise not_found(f"no Personalizer operation at {rest!r}")

    return router


def install(app: FastAPI) -> None:
    """Mount the Personalizer API (every base path, with and without an experiment prefix)."""
    versioned = build_router()
    unversioned = APIRouter(
        route_class=PersonalizerRoute, dependencies=[Depends(_check_api_version)]
    )
    unversioned.include_router(build_router())
    # Left out of cbloop's OpenAPI: Personalizer's own swaggers describe these routes, and
    # ten copies of each would bury the native API in /docs.
    for prefix in ("", "/experiments/{experiment}"):
        for base in VERSIONED_BASES:
            app.include_router(versioned, prefix=prefix + base, include_in_schema=False)
        app.include_router(unversioned, prefix=prefix + UNVERSIONED_BASE, include_in_schema=False)
    app.add_middleware(CollapseSlashes)


__all__ = ["PersonalizerError", "install", "native_request"]
