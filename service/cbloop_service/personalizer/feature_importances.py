"""Personalizer's feature importances <-> cbloop feature-importance requests and results.

Run by the learning loop with `cbloop features`' code over the request's time range
(pipeline.personalizer_feature_importances); these routes write the request and read the
result back. What maps to what:

* body `name`, `startTime`, `endTime`: the request's (endTime after startTime).
* `status`: pending -> `NotSubmitted`, succeeded -> `Succeeded`, failed -> `Failed` (the
  reason in `description`).
* `featureScores[]`, best first: one entry per namespace, `namespace` its name,
  `featureName` null (cbloop scores namespaces, not single features), `score` the change of
  the experiment's estimated reward per event when the namespace is left out, as
  value(all) - value(without) with the promotion estimator (positive: it helps). Not
  normalised as Personalizer's were; cbloop's figures come with each entry: `vwNamespace`
  (VW's first character, which namespaces share), `ciLow`, `ciHigh` (paired interval) and
  `verdict` (helps, hurts, negligible, unclear, failed). The whole `cbloop features` report
  is `report`.
* list: `{"value": [...], "nextLink": null}`.
"""

from __future__ import annotations

from typing import Any

from cbloop.clock import format_ts
from cbloop.evaluation_requests import FAILED, PENDING, SUCCEEDED, EvaluationRequest
from cbloop_service.personalizer.evaluations import parse_time
from cbloop_service.personalizer.schemas import FeatureImportanceContract

_STATUS = {PENDING: "NotSubmitted", SUCCEEDED: "Succeeded", FAILED: "Failed"}


def new_request(
    body: FeatureImportanceContract, importance_id: str, experiment_name: str
) -> EvaluationRequest:
    return EvaluationRequest(
        id=importance_id,
        experiment=experiment_name,
        name=body.name,
        start=parse_time(body.start_time, "startTime"),
        end=parse_time(body.end_time, "endTime"),
        policies=(),
        created_at=format_ts(),
    )


def _scores(report: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for effect in report.get("namespaces", []):
        delta = effect.get("delta") or {}
        for namespace in effect["namespaces"]:
            out.append(
                {
                    "namespace": namespace,
                    "featureName": None,
                    "score": delta.get("value"),
                    "vwNamespace": effect["vw_namespace"],
                    "ciLow": delta.get("ci_low"),
                    "ciHigh": delta.get("ci_high"),
                    "verdict": effect["verdict"],
                }
            )
    return out


def feature_importance(request: EvaluationRequest, result: dict[str, Any] | None) -> dict[str, Any]:
    status = PENDING if result is None else str(result["status"])
    report = (result or {}).get("report")
    return {
        "id": request.id,
        "name": request.name,
        "startTime": format_ts(request.start),
        "endTime": format_ts(request.end),
        "creationTime": request.created_at,
        "status": _STATUS[status],
        "featureScores": _scores(report) if report else [],
        "description": (result or {}).get("error"),
        "report": report,
    }


def details(request: EvaluationRequest, result: dict[str, Any] | None) -> dict[str, Any]:
    full = feature_importance(request, result)
    keys = ("id", "name", "startTime", "endTime", "creationTime", "status")
    return {k: full[k] for k in keys}
