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
from cbloop.settings import ServiceSettings, Settings
from cbloop_service.errors import (
    AllActionsExcluded,
    LimitExceeded,
    RewardOutOfRange,
    UnknownExperiment,
)
from cbloop_service.modes import assign, baseline_index
from cbloop_service.policy import PolicyHolder, predict_pmf
from cbloop_service.schemas import RankRequest


@dataclass(slots=True)
class Decision:
    event_id: str
    experiment: str
    model_id: str
    action_id: str
    probability: float
    #: (action id, probability): the chosen action, the other eligible ones by decreasing
    #: probability, then the excluded ones (probability 0).
    ranking: list[tuple[str, float]]
    mode: str = "online"
    holdout: bool = False
    unit_id: str = ""

    def answer(self) -> dict[str, object]:
        """The answer body of POST /v1/rank (and a line of `cbloop decide`)."""
        return {
            "event_id": self.event_id,
            "experiment": self.experiment,
            "model_id": self.model_id,
            "action_id": self.action_id,
            "probability": self.probability,
            "ranking": [{"id": a, "probability": p} for a, p in self.ranking],
            "mode": self.mode,
            "holdout": self.holdout,
            "unit_id": self.unit_id,
        }


def check_limits(request: RankRequest, limits: ServiceSettings) -> None:
    n_actions = len(request.actions)
    if n_actions > limits.max_actions:
        raise LimitExceeded(
            f"{n_actions} actions, at most {limits.max_actions} allowed",
            field="actions",
        )
    shared = sum(len(features) for features in request.context.values())
    own = sum(len(f) for action in request.actions for f in action.features.values())
    count = shared + own
    if count > limits.max_features:
        raise LimitExceeded(
            f"{count} features in context and actions, at most {limits.max_features} allowed",
            field="context",
        )
    # VW scores the shared features once per action (they are copied into every `_multi`
    # example), plus each action's own features and its id: that, not the body size, is
    # what a request costs.
    scored = (shared + 1) * n_actions + own
    if scored > limits.max_scored_features:
        raise LimitExceeded(
            f"{scored} features to score ({shared} context features x {n_actions} actions "
            f"+ {own} action features + {n_actions} action ids), at most "
            f"service.max_scored_features={limits.max_scored_features} allowed",
            field="context",
        )


def check_reward(value: float, experiment: str | None, settings: Settings) -> None:
    """Refuse a reward outside its experiment's [reward.min, reward.max] (any one's if unnamed)."""
    if experiment is not None:
        reward = settings.experiments.get(experiment)
        if reward is None:
            raise UnknownExperiment(experiment)
        low, high = reward.reward.min, reward.reward.max
        where = f"experiments.{experiment}.reward.min/max"
    else:
        low = min(e.reward.min for e in settings.experiments.values())
        high = max(e.reward.max for e in settings.experiments.values())
        where = "reward.min/max of the configured experiments"
    if not low <= value <= high:
        raise RewardOutOfRange(value, low, high, where)


def rank(request: RankRequest, policy: PolicyHolder, decisions: SegmentWriter) -> Decision:
    excluded = set(request.excluded_actions)
    eligible = [a for a in request.actions if a.id not in excluded] if excluded else request.actions
    if not eligible:
        raise AllActionsExcluded()
    event_id = request.event_id or secrets.token_hex(16)
    pairs = [(a.id, a.features) for a in eligible]
    action_ids = [pair[0] for pair in pairs]
    baseline = (
        0
        if request.baseline_action is None
        else baseline_index(request.baseline_action, action_ids, excluded)
    )
    unit_id = request.unit_id or event_id
    c_json = encode_context(build_vw_context(request.context, pairs))
    model = policy.model  # one read: a concurrent swap cannot mix two models in this request
    settings = policy.settings
    mode, holdout, share = "online", False, settings.holdout.share
    if settings.mode == "online" and share == 0.0:
        pmf = normalize_pmf(predict_pmf(model.workspace, predict_line(c_json)), len(eligible))
    else:
        assigned = assign(
            policy.experiment,
            settings,
            unit_id=unit_id,
            n_actions=len(eligible),
            baseline=baseline,
        )
        mode, holdout = assigned.mode, assigned.holdout
        pmf = (
            normalize_pmf(predict_pmf(model.workspace, predict_line(c_json)), len(eligible))
            if assigned.pmf is None
            else assigned.pmf
        )
    chosen = choose(event_id, pmf)
    # The logged "a" order is also the answer's ranking, so an app showing ranking[0] shows
    # exactly the logged choice.
    order = ranking_order(pmf, chosen)
    decisions.append(
        decision_line(
            event_id=event_id,
            ts=format_ts(),
            order=order,
            probabilities=pmf,
            c_json=c_json,
            experiment=policy.experiment,
            model_id=model.model_id,
            action_ids=action_ids,
            sample_prob=split_draw(event_id),
            deferred=request.defer_activation,
            mode=mode,
            holdout=holdout,
            unit_id=unit_id,
            holdout_share=share,
            baseline_action=action_ids[baseline],
        )
    )
    ranking = [(action_ids[i], pmf[i]) for i in order]
    if excluded:
        ranking += [(a.id, 0.0) for a in request.actions if a.id in excluded]
    return Decision(
        event_id=event_id,
        experiment=policy.experiment,
        model_id=model.model_id,
        action_id=action_ids[chosen],
        probability=pmf[chosen],
        ranking=ranking,
        mode=mode,
        holdout=holdout,
        unit_id=unit_id,
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
