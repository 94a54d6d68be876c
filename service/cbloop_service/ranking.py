"""A rank request from validated input to a logged decision.

Everything runs inline on the event loop: the VW prediction and the os.write of the line
take microseconds, less than a hop to a thread pool would. The decision is written before
the answer is built, so an answered decision is always in the log.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cbloop.clock import format_ts
from cbloop.encoding import (
    build_vw_context,
    decision_line,
    encode_context,
    outcome_line,
    predict_line,
)
from cbloop.eventlog import SegmentWriter
from cbloop.sampling import choose, normalize_pmf, ranking_order, split_draw
from cbloop.settings import ServiceSettings
from cbloop_service.errors import AllActionsExcluded, LimitExceeded
from cbloop_service.policy import PolicyHolder, predict_pmf
from cbloop_service.schemas import RankRequest


@dataclass(slots=True)
class Decision:
    event_id: str
    experiment: str
    model_id: str
    action_id: str
    probability: float
    #: (action id, probability): eligible actions by decreasing probability, then excluded ones.
    ranking: list[tuple[str, float]]


def check_limits(request: RankRequest, limits: ServiceSettings) -> None:
    if len(request.actions) > limits.max_actions:
        raise LimitExceeded(
            f"{len(request.actions)} actions, at most {limits.max_actions} allowed",
            field="actions",
        )
    count = sum(len(features) for features in request.context.values())
    for action in request.actions:
        count += sum(len(features) for features in action.features.values())
    if count > limits.max_features:
        raise LimitExceeded(
            f"{count} features in context and actions, at most {limits.max_features} allowed",
            field="context",
        )


def rank(request: RankRequest, policy: PolicyHolder, decisions: SegmentWriter) -> Decision:
    excluded = set(request.excluded_actions)
    eligible = [a for a in request.actions if a.id not in excluded] if excluded else request.actions
    if not eligible:
        raise AllActionsExcluded()
    event_id = request.event_id or secrets.token_hex(16)
    action_ids = [a.id for a in eligible]
    c_json = encode_context(
        build_vw_context(request.context, [(a.id, a.features) for a in eligible])
    )
    model = policy.model  # one read: a concurrent swap cannot mix two models in this request
    pmf = normalize_pmf(predict_pmf(model.workspace, predict_line(c_json)), len(eligible))
    chosen = choose(event_id, pmf)
    decisions.append(
        decision_line(
            event_id=event_id,
            ts=format_ts(),
            order=ranking_order(pmf, chosen),
            probabilities=pmf,
            c_json=c_json,
            experiment=policy.experiment,
            model_id=model.model_id,
            action_ids=action_ids,
            sample_prob=split_draw(event_id),
            deferred=request.defer_activation,
        )
    )
    by_probability = sorted(range(len(pmf)), key=lambda i: (-pmf[i], i))
    ranking = [(action_ids[i], pmf[i]) for i in by_probability]
    if excluded:
        ranking += [(a.id, 0.0) for a in request.actions if a.id in excluded]
    return Decision(
        event_id=event_id,
        experiment=policy.experiment,
        model_id=model.model_id,
        action_id=action_ids[chosen],
        probability=pmf[chosen],
        ranking=ranking,
    )


def record_outcome(
    outcomes: SegmentWriter,
    event_id: str,
    kind: str,
    value: float | None = None,
    idempotency_key: str | None = None,
) -> None:
    # A reward may come before its decision is visible (another worker, an open segment):
    # outcomes are joined later by event id, so nothing here looks the decision up.
    outcomes.append(
        outcome_line(
            event_id=event_id,
            ts=format_ts(),
            kind=kind,
            value=value,
            idempotency_key=idempotency_key,
        )
    )
