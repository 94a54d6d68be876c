"""Personalizer's offline evaluations <-> cbloop evaluation requests and results.

The service only writes the request (cbloop.evaluation_requests); the learning loop runs it
with cbloop's offline evaluation (pipeline.personalizer_evaluations) and writes the result,
which these routes read back. What maps to what:

* body `name`, `startTime`, `endTime`: the request's; decisions whose time is in
  [startTime, endTime] are evaluated (endTime must be after startTime).
* body `policies[]` `{name, arguments}`: each trained fresh on the range's train split and
  scored on its eval split; `arguments` go through the same mapping as a policy update
  (`--epsilon`, `--squarecb`, ... become `exploration`; the learning flags pass cbloop's
  whitelist), so a refused flag is a 400 at creation. The experiment's own settings (those
  it has when the loop runs the request) are always evaluated too, as `Online Policy`.
* `enableOfflineExperimentation` / `enablePolicyOptimization`: refused when true (policy
  search is `cbloop search`).
* `status`: pending (also while the loop runs it) -> `pending` (v1.0) / `NotSubmitted`
  (later versions); succeeded ->
  `completed` / `Succeeded`; failed -> `failed` / `Failed` (the reason in `description`).
* `policyResults[]` (v1.0; also as `content.value`, the preview's place): `name`,
  `arguments`, `policySource` (`Online` or `Custom`), and one `summary[]` entry equal to
  `totalSummary` (cbloop aggregates over the whole range):
  - `ipsEstimatorNumerator`: sum over events of w r (w = target / logged probability of the
    logged action);
  - `ipsEstimatorDenominator`: the number of events (their ratio is IPS);
  - `snipsEstimatorDenominator`: sum of w (numerator over it is SNIPS);
  - `sumOfSquares`: sum of (w r)^2; `nonZeroProbability`: events where the policy could
    choose the logged action;
  - `confidenceInterval`: half the width of the IPS interval; `aggregateTimeWindow`: the
    range as an ISO 8601 duration; `timeStamp`: endTime.
  cbloop's own figures come with each policy result as `estimates` (every estimator: value,
  ci_low, ci_high, n, ess, std_error, ...: what `cbloop evaluate` and `cbloop search`
  report) and `vwArguments`; the logging policy's mean reward is `loggingPolicy`.
* list: an array (v1.0) or `{"value": [...], "nextLink": null}` (later versions).
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from cbloop.clock import compact_ts, format_ts, parse_ts
from cbloop.evaluation_requests import (
    FAILED,
    PENDING,
    SUCCEEDED,
    EvaluationRequest,
    EvaluationRequestError,
    PolicySpec,
)
from cbloop.settings import ExperimentSettings
from cbloop_service.personalizer.configuration import duration_text, policy_changes
from cbloop_service.personalizer.schemas import EvaluationContract

ONLINE_POLICY = "Online Policy"
_V1_STATUS = {PENDING: "pending", SUCCEEDED: "completed", FAILED: "failed"}
_STATUS = {PENDING: "NotSubmitted", SUCCEEDED: "Succeeded", FAILED: "Failed"}


def new_id() -> str:
    return f"pz-{compact_ts()}-{secrets.token_hex(4)}"


def parse_time(text: str, field: str) -> datetime:
    try:
        return parse_ts(text)
    except ValueError:
        raise EvaluationRequestError(f"{field}: {text[:60]!r} is not an ISO 8601 time") from None


def policy_spec(name: str, arguments: str) -> PolicySpec:
    changes = policy_changes(arguments)
    exploration = {k.removeprefix("exploration."): v for k, v in changes.items() if k != "vw_args"}
    return PolicySpec(name, arguments, str(changes["vw_args"]), exploration)


def new_request(
    body: EvaluationContract,
    evaluation_id: str,
    experiment_name: str,
    experiment: ExperimentSettings,
) -> EvaluationRequest:
    """The request for `body`, checked as far as it can be without the logs."""
    if body.enable_offline_experimentation or body.enable_policy_optimization:
        raise EvaluationRequestError(
            "policy optimization is not run by evaluations; use `cbloop search`"
        )
    specs = []
    for i, p in enumerate(body.policies):
        if p.name == ONLINE_POLICY:
            raise EvaluationRequestError(f"policies[{i}]: the name {ONLINE_POLICY!r} is taken")
        spec = policy_spec(p.name, p.arguments)
        spec.settings(experiment)  # the whitelist and bounds, now rather than in the loop
        specs.append(spec)
    return EvaluationRequest(
        id=evaluation_id,
        experiment=experiment_name,
        name=body.name,
        start=parse_time(body.start_time, "startTime"),
        end=parse_time(body.end_time, "endTime"),
        policies=tuple(specs),
        created_at=format_ts(),
    )


def _summary(request: EvaluationRequest, policy: dict[str, Any]) -> dict[str, Any] | None:
    sums = policy.get("sums")
    if not sums:
        return None
    ips = policy["estimates"].get("ips") or {}
    low, high = ips.get("ci_low"), ips.get("ci_high")
    return {
        "timeStamp": format_ts(request.end),
        "aggregateTimeWindow": duration_text((request.end - request.start).total_seconds()),
        "ipsEstimatorNumerator": sums["ips_numerator"],
        "ipsEstimatorDenominator": sums["events"],
        "snipsEstimatorDenominator": sums["weight_sum"],
        "sumOfSquares": sums["sum_of_squares"],
        "nonZeroProbability": sums["non_zero_probability"],
        "confidenceInterval": (high - low) / 2 if low is not None and high is not None else None,
    }


def _policy_results(request: EvaluationRequest, result: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for policy in result.get("policies", []):
        summary = _summary(request, policy)
        out.append(
            {
                "name": policy["name"],
                "arguments": policy["arguments"],
                "policySource": "Online" if policy["name"] == ONLINE_POLICY else "Custom",
                "summary": [summary] if summary else [],
                "totalSummary": summary,
                "vwArguments": policy.get("vw_arguments"),
                "estimates": policy.get("estimates", {}),
                "error": policy.get("error"),
            }
        )
    return out


def evaluation(
    request: EvaluationRequest, result: dict[str, Any] | None, *, v1: bool
) -> dict[str, Any]:
    """The Evaluation answer for a request and its result (None: still pending)."""
    status = PENDING if result is None else str(result["status"])
    names = _V1_STATUS if v1 else _STATUS
    body: dict[str, Any] = {
        "id": request.id,
        "jobId": request.id,
        "name": request.name,
        "startTime": format_ts(request.start),
        "endTime": format_ts(request.end),
        "creationTime": request.created_at,
        "status": names[status],
        "evaluationType": "Manual",
        "description": (result or {}).get("error"),
        "policyResults": [],
        "content": None,
        "loggingPolicy": None,
        "featureImportance": [],
    }
    if result is not None:
        results = _policy_results(request, result)
        body["policyResults"] = results
        body["content"] = {
            "startTime": body["startTime"],
            "endTime": body["endTime"],
            "intervalInMinutes": None,
            "value": results,
        }
        body["loggingPolicy"] = result.get("logging_policy")
        body["events"] = {
            "train": result.get("train_events"),
            "eval": result.get("eval_events"),
        }
    return body


def details(
    request: EvaluationRequest, result: dict[str, Any] | None, *, v1: bool
) -> dict[str, Any]:
    """One entry of the list (the preview's EvaluationDetails; v1.0 listed whole ones)."""
    full = evaluation(request, result, v1=v1)
    if v1:
        return full
    keys = ("id", "name", "startTime", "endTime", "creationTime", "status", "evaluationType")
    return {k: full[k] for k in keys}
