"""`cbloop deploy` and `cbloop rollback`: moving an experiment's `current` pointer.

Deploy applies the promotion rule from the experiment's settings to the candidate's latest
evaluation (which scored the candidate and the deployed model on the same events), records
the decision and its figures in the candidate's metadata whatever the outcome, and moves the
pointer only when the rule (or --force) says so. The service workers poll the pointer and
hot-swap; a model they cannot load they refuse, and the old one keeps serving.

Order of writes: the pointer first, then states and the decision record. The pointer is the
authority (pipeline.models.reconcile_states repairs states), so a process killed in between
never leaves a promoted model that is not served, nor one that is served but marked retired.
"""

from __future__ import annotations

import logging
import math
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cbloop.clock import compact_ts, format_ts
from cbloop.errors import InvalidInput
from cbloop.registry import ModelMetadata, ModelRegistry, RegistryError
from cbloop.settings import ExperimentSettings, PromotionSettings
from cbloop.vw import ModelLoadError, open_workspace
from cbloop_pipeline.evaluate import baseline_of
from cbloop_pipeline.models import (
    deployed_model,
    is_deployable,
    last_event_at,
    reconcile_states,
    why_not_deployable,
)
from cbloop_pipeline.ope.estimators import z_value

logger = logging.getLogger(__name__)


class DeployError(InvalidInput):
    """Nothing can be deployed or rolled back as asked; the message says why."""


@dataclass(frozen=True)
class Verdict:
    """What the promotion rule concluded, with the figures it compared."""

    promoted: bool
    reason: str
    estimator: str | None = None
    candidate_value: float | None = None
    deployed_value: float | None = None
    n_events: int | None = None
    #: What the candidate was compared with (pipeline.evaluate.BASELINES).
    baseline: str | None = None


@dataclass(frozen=True)
class Decision:
    decision_id: str
    action: str  # "deploy" | "rollback"
    model_id: str
    previous_model_id: str | None
    promoted: bool
    forced: bool
    reason: str
    eval_id: str | None = None
    estimator: str | None = None
    candidate_value: float | None = None
    deployed_value: float | None = None
    margin: float | None = None
    use_lower_bound: bool | None = None
    n_events: int | None = None
    baseline: str | None = None

    def history_entry(self) -> dict[str, Any]:
        entry = asdict(self)
        del entry["action"]
        return {"what": "promotion" if self.action == "deploy" else "rollback", **entry}


def new_decision_id() -> str:
    return f"d-{compact_ts()}-{secrets.token_hex(3)}"


def _finite(value: object) -> float | None:
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _std_error(est: Mapping[str, Any], confidence: float) -> float | None:
    """The estimate's standard error, or its interval's half-width over z if none is kept."""
    se = _finite(est.get("std_error"))
    if se is not None:
        return se
    low, high = _finite(est.get("ci_low")), _finite(est.get("ci_high"))
    if low is None or high is None:
        return None
    return (high - low) / (2.0 * z_value(confidence))


def promotion_verdict(
    rule: PromotionSettings, evaluation: dict[str, Any] | None, deployed_id: str | None
) -> Verdict:
    """The promotion rule, on an evaluation of at least min_events events that scored the
    model deployed now.

    Baseline (pipeline.evaluate.baseline_of): the deployed model's own on-policy mean reward
    on the events it served, when it served at least min_events of them; else its estimate
    on the primary estimator; with no model deployed, the logging policy's mean reward.

    Figure: the candidate's estimate must exceed baseline + margin. With use_lower_bound:
    against the deployed model's off-policy estimate (same events, same reward model, so
    their errors largely cancel) the candidate's lower bound must exceed it + margin; against
    an on-policy or logging baseline, which carries its own independent sampling error, the
    lower bound of the difference, (c - b) - z sqrt(se_c^2 + se_b^2), must exceed the margin.
    """
    if evaluation is None:
        return Verdict(False, "the candidate has no evaluation; run cbloop evaluate first")
    n_events = int(evaluation["n_events"])
    evaluated_against = evaluation.get("deployed_model_id")
    if deployed_id is not None and evaluated_against != deployed_id:
        return Verdict(
            False,
            f"evaluation {evaluation['eval_id']} compared with {evaluated_against or 'no model'}, "
            f"but {deployed_id} is deployed now; evaluate again",
            n_events=n_events,
        )
    if n_events < rule.min_events:
        return Verdict(
            False,
            f"evaluated on {n_events} events, fewer than promotion.min_events={rule.min_events}",
            n_events=n_events,
        )
    name = rule.estimator
    policies = evaluation["policies"]
    cand = policies["candidate"]["estimates"].get(name, {})
    if deployed_id is None:
        policies = {**policies, "deployed": None}
    kind, base = baseline_of(policies, name, rule.min_events)
    base_label = {
        "deployed_on_policy": f"deployed {deployed_id} on-policy mean reward "
        f"(on the {base.get('n')} events it served)",
        "deployed_ope": f"deployed {deployed_id} {name}",
        "logging_policy": "the logging policy's mean reward",
    }[kind]
    value = _finite(cand.get("value"))
    baseline = _finite(base.get("value"))
    what = f"{name} {'lower bound' if rule.use_lower_bound else 'estimate'}"
    if value is None or baseline is None:
        return Verdict(
            False,
            f"{what} undefined for the candidate or {base_label}"
            + (f" ({cand['reason']})" if cand.get("reason") else ""),
            estimator=name,
            candidate_value=value,
            deployed_value=baseline,
            n_events=n_events,
            baseline=kind,
        )
    if rule.use_lower_bound and kind != "deployed_ope":
        confidence = float(evaluation.get("confidence") or 0.95)
        se_c, se_b = _std_error(cand, confidence), _std_error(base, confidence)
        if se_c is None or se_b is None:
            return Verdict(
                False,
                f"no standard error for the candidate's {name} or {base_label}",
                estimator=name,
                candidate_value=value,
                deployed_value=baseline,
                n_events=n_events,
                baseline=kind,
            )
        low = (value - baseline) - z_value(confidence) * math.hypot(se_c, se_b)
        promoted = low > rule.margin
        reason = (
            f"lower bound of candidate {name} {value:.5f} minus {base_label} {baseline:.5f}: "
            f"{low:.5f} {'>' if promoted else '<='} margin {rule.margin:g}"
        )
        return Verdict(promoted, reason, name, value, baseline, n_events, kind)
    figure = _finite(cand.get("ci_low")) if rule.use_lower_bound else value
    if figure is None:
        return Verdict(
            False,
            f"{what} undefined for the candidate",
            estimator=name,
            deployed_value=baseline,
            n_events=n_events,
            baseline=kind,
        )
    promoted = figure > baseline + rule.margin
    relation = ">" if promoted else "<="
    reason = (
        f"candidate {what} {figure:.5f} {relation} {base_label} {baseline:.5f}"
        f" + margin {rule.margin:g}"
    )
    return Verdict(promoted, reason, name, figure, baseline, n_events, kind)


def latest_candidate(
    registry: ModelRegistry, name: str, experiment: ExperimentSettings
) -> ModelMetadata | None:
    """The newest model that was trained and never deployed, under the current arguments."""
    trained = [
        m
        for m in registry.list_models(name)
        if m.state == "trained" and is_deployable(m, experiment)
    ]
    return trained[-1] if trained else None


def check_loads(registry: ModelRegistry, meta: ModelMetadata) -> None:
    """Load the model as the service will; a file VW cannot load is marked refused."""
    with tempfile.TemporaryDirectory(prefix="cbloop-deploy-") as tmp:
        try:
            path = registry.fetch(meta.experiment, meta.model_id, Path(tmp))
            ws = open_workspace(meta.vw_args, path)
        except (ModelLoadError, RegistryError) as exc:
            meta.state = "refused"
            meta.record("refused", by="deploy", error=str(exc))
            registry.update_metadata(meta)
            raise DeployError(f"model {meta.model_id} cannot be loaded: {exc}") from exc
        ws.finish()


def deploy(
    registry: ModelRegistry,
    name: str,
    experiment: ExperimentSettings,
    *,
    model_id: str | None = None,
    force: bool = False,
) -> Decision:
    """Decide on a candidate (default: the newest trained model) and move the pointer if won."""
    reconcile_states(registry, name)
    candidate = (
        _model(registry, name, model_id)
        if model_id is not None
        else latest_candidate(registry, name, experiment)
    )
    if candidate is None:
        raise DeployError(f"experiment {name!r} has no trained model to deploy")
    current = deployed_model(registry, name)
    current_id = current.model_id if current else None
    if candidate.model_id == current_id:
        raise DeployError(f"model {candidate.model_id} is already deployed")
    _check_deployable(candidate, experiment)
    evaluation = candidate.evaluations[-1] if candidate.evaluations else None
    rule = experiment.promotion
    verdict = (
        Verdict(True, "forced (--force): the promotion rule was not applied")
        if force
        else promotion_verdict(rule, evaluation, current_id)
    )
    decision = Decision(
        decision_id=new_decision_id(),
        action="deploy",
        model_id=candidate.model_id,
        previous_model_id=current_id,
        promoted=verdict.promoted,
        forced=force,
        reason=verdict.reason,
        eval_id=evaluation["eval_id"] if evaluation else None,
        estimator=verdict.estimator,
        candidate_value=verdict.candidate_value,
        deployed_value=verdict.deployed_value,
        margin=rule.margin,
        use_lower_bound=rule.use_lower_bound,
        n_events=verdict.n_events,
        baseline=verdict.baseline,
    )
    if decision.promoted:
        check_loads(registry, candidate)
        _move_pointer(registry, candidate, current, f"deploy: {decision.reason}", "retired")
    candidate.history.append({"at": format_ts(), **decision.history_entry()})
    registry.update_metadata(candidate)
    logger.info(
        "%s %s: %s",
        "promoted" if decision.promoted else "not promoted",
        candidate.model_id,
        decision.reason,
    )
    return decision


def rollback(
    registry: ModelRegistry,
    name: str,
    experiment: ExperimentSettings,
    *,
    to: str | None = None,
) -> Decision:
    """Point back to `to`, or to the model that was live before the current one.

    When the pointer names a model the service refused, the model still serving is the
    default target: rolling back then just makes the pointer say what is served.
    """
    reconcile_states(registry, name)
    pointer = registry.current(name)
    if pointer is None:
        raise DeployError(f"experiment {name!r} has no deployed model to roll back from")
    current = _model(registry, name, pointer.model_id)
    live = deployed_model(registry, name)
    if to is not None:
        target = _model(registry, name, to)
    elif live is not None and live.model_id != current.model_id:
        target = live
    else:
        target = _rollback_target(registry, name, experiment, current)
    if target.model_id == current.model_id:
        raise DeployError(f"model {target.model_id} is already deployed")
    _check_deployable(target, experiment)
    check_loads(registry, target)
    decision = Decision(
        decision_id=new_decision_id(),
        action="rollback",
        model_id=target.model_id,
        previous_model_id=current.model_id,
        promoted=True,
        forced=False,
        reason=f"rollback from {current.model_id}",
    )
    _move_pointer(registry, target, current, decision.reason, "rolled back")
    target.history.append({"at": format_ts(), **decision.history_entry()})
    registry.update_metadata(target)
    logger.info("rolled back %s from %s to %s", name, current.model_id, target.model_id)
    return decision


def _rollback_target(
    registry: ModelRegistry,
    name: str,
    experiment: ExperimentSettings,
    current: ModelMetadata,
) -> ModelMetadata:
    """The most recently live model that was not itself rolled back since it was live.

    "Live" ends with retirement (a promotion replaced it) or starts with deployment; a model
    replaced by a rollback is skipped, so repeated rollbacks walk further back instead of
    flipping between two models.
    """
    best: tuple[str, ModelMetadata] | None = None
    for meta in registry.list_models(name):
        if meta.model_id == current.model_id or not is_deployable(meta, experiment):
            continue
        deployed_at = last_event_at(meta, "deployed")
        rolled_back_at = last_event_at(meta, "rolled back")
        live_at = max(deployed_at, last_event_at(meta, "retired"))
        if not live_at or (rolled_back_at and rolled_back_at >= deployed_at):
            continue
        if best is None or live_at > best[0]:
            best = (live_at, meta)
    if best is None:
        raise DeployError(f"experiment {name!r} has no earlier deployed model to roll back to")
    return best[1]


def _move_pointer(
    registry: ModelRegistry,
    new: ModelMetadata,
    old: ModelMetadata | None,
    reason: str,
    old_event: str,
) -> None:
    registry.set_current(new.experiment, new.model_id, reason)
    new.state = "deployed"
    new.record("deployed", reason=reason, previous=old.model_id if old else None)
    registry.update_metadata(new)
    if old is not None:
        # The old model's file stays: a refused model keeps its verdict, the others retire.
        if old.state != "refused":
            old.state = "retired"
        old.record(old_event, replaced_by=new.model_id, reason=reason)
        registry.update_metadata(old)


def _model(registry: ModelRegistry, name: str, model_id: str) -> ModelMetadata:
    try:
        return registry.metadata(name, model_id)
    except RegistryError as exc:
        raise DeployError(str(exc)) from exc


def _check_deployable(meta: ModelMetadata, experiment: ExperimentSettings) -> None:
    reason = why_not_deployable(meta, experiment)
    if reason is not None:
        raise DeployError(reason)
