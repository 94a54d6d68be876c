"""Reading a served model's off-policy estimate back from the registry.

`cbloop evaluate` appends its records to the evaluated candidate's metadata; each record holds
the candidate's estimates and, when one was deployed, the deployed model's on the same events.
A model that stays deployed for several rounds is therefore re-estimated as "deployed" in
later candidates' records, so the newest record naming the model in either role is its
freshest estimate.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from cbloop.registry import ModelMetadata
from cbloop_pipeline.simulate.results import OpeEstimate

logger = logging.getLogger(__name__)

DEFAULT_ESTIMATOR = "dr"


def _estimate_of(record: Mapping[str, Any], model_id: str) -> Mapping[str, Any] | None:
    policies = record.get("policies")
    if not isinstance(policies, Mapping):
        return None
    for role in ("candidate", "deployed"):
        policy = policies.get(role)
        if isinstance(policy, Mapping) and policy.get("model_id") == model_id:
            estimates = policy.get("estimates")
            if isinstance(estimates, Mapping):
                return estimates
    return None


def latest_estimate(
    models: Iterable[ModelMetadata], model_id: str, *, before: str | None = None
) -> OpeEstimate | None:
    """The newest estimate of `model_id` in any evaluation record created before `before`
    (an ISO timestamp, compared as text: every timestamp here has the same format)."""
    best: tuple[str, OpeEstimate] | None = None
    for meta in models:
        for record in meta.evaluations:
            created = str(record.get("created_at", ""))
            if before is not None and created >= before:
                continue
            estimates = _estimate_of(record, model_id)
            if estimates is None:
                continue
            estimator = str(record.get("primary_estimator") or DEFAULT_ESTIMATOR)
            chosen = estimates.get(estimator)
            if not isinstance(chosen, Mapping) or chosen.get("value") is None:
                continue
            estimate = OpeEstimate(
                estimator=estimator,
                value=float(chosen["value"]),
                ci_low=_opt_float(chosen.get("ci_low")),
                ci_high=_opt_float(chosen.get("ci_high")),
                events=_opt_int(chosen.get("n", record.get("n_events"))),
                evaluated_on=",".join(str(j) for j in record.get("joins", [])) or None,
                confidence=_opt_float(record.get("confidence")) or 0.95,
            )
            if best is None or created > best[0]:
                best = (created, estimate)
    return best[1] if best is not None else None


def _opt_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _opt_int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None
