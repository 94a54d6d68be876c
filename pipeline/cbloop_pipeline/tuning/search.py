"""`cbloop search`: train every candidate setting on the train splits, estimate each one's
value on the eval splits, rank them, and say whether the winner should replace the current
settings.

The current settings are trained and scored the same way (a fresh model on the same train
events), so the comparison is between settings, not between a fresh model and one that has
learned for months. Candidates run two at a time: VW trains in a child process and scores
with the GIL released, so two threads keep both cores busy.

Apply rule: the winner (best point estimate) replaces the current settings only if its
lower confidence bound is above the current settings' point estimate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbloop.settings import ExperimentSettings
from cbloop.storage import ObjectStore
from cbloop_pipeline.join_catalog import FinishedJoin
from cbloop_pipeline.ope.estimators import DEFAULT_CONFIDENCE, Estimate
from cbloop_pipeline.ope.evaluate import EvaluationResult
from cbloop_pipeline.ope.reward_model import DEFAULT_FOLDS
from cbloop_pipeline.tuning.grid import Candidate, current_candidate
from cbloop_pipeline.tuning.paired import ESTIMATORS, Difference, paired_difference
from cbloop_pipeline.tuning.runs import (
    CandidateFailed,
    RunData,
    TuningError,
    estimate_dict,
    prepared,
    train_and_score,
)

logger = logging.getLogger(__name__)

#: Candidates trained and scored at once (the machine's two cores).
PARALLEL = 2


@dataclass(frozen=True)
class SearchOptions:
    estimator: str = "dr"
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    confidence: float = DEFAULT_CONFIDENCE
    parallel: int = PARALLEL

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise TuningError(
                f"unknown estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}"
            )


@dataclass(frozen=True)
class CandidateScore:
    candidate: Candidate
    estimate: Estimate | None
    estimates: dict[str, Estimate] = field(default_factory=dict)
    examples: int = 0
    seconds: float = 0.0
    error: str | None = None
    result: EvaluationResult | None = None

    @property
    def name(self) -> str:
        return self.candidate.name

    @property
    def value(self) -> float:
        """The point estimate; -inf when failed or undefined, so it ranks last."""
        if self.estimate is None or math.isnan(self.estimate.value):
            return -math.inf
        return self.estimate.value

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "vw_args": self.candidate.vw_args,
            "exploration": self.candidate.exploration,
            "vw_arguments": self.candidate.vw_arguments(),
            "estimate": estimate_dict(self.estimate) if self.estimate else None,
            "estimates": {k: estimate_dict(v) for k, v in self.estimates.items()},
            "examples_trained": self.examples,
            "train_seconds": round(self.seconds, 3),
            "error": self.error,
        }


@dataclass(frozen=True)
class ApplyDecision:
    apply: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"apply": self.apply, "reason": self.reason}


@dataclass(frozen=True)
class SearchResult:
    experiment: str
    options: SearchOptions
    ranked: list[CandidateScore]
    current: CandidateScore
    joins: tuple[str, ...]
    eval_events: int
    #: Winner minus current settings, paired on the same eval events (None if either failed).
    lift: Difference | None

    @property
    def winner(self) -> CandidateScore:
        return self.ranked[0]

    def decision(self) -> ApplyDecision:
        return apply_decision(self.winner, self.current)

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "estimator": self.options.estimator,
            "confidence": self.options.confidence,
            "reward_model": {"folds": self.options.folds, "seed": self.options.seed},
            "joins": list(self.joins),
            "eval_events": self.eval_events,
            "ranked": [s.to_dict() for s in self.ranked],
            "current": self.current.name,
            "winner": self.winner.name,
            "winner_minus_current": self.lift.to_dict() if self.lift else None,
            "decision": self.decision().to_dict(),
        }


def apply_decision(winner: CandidateScore, current: CandidateScore) -> ApplyDecision:
    """Apply only if the winner's lower bound is above the current settings' point estimate."""
    if winner.name == current.name:
        return ApplyDecision(False, "the current settings rank first")
    if winner.estimate is None:
        return ApplyDecision(False, f"the winner {winner.name} has no estimate")
    if current.estimate is None or math.isnan(current.estimate.value):
        return ApplyDecision(False, "the current settings could not be estimated")
    low, now = winner.estimate.ci_low, current.estimate.value
    if math.isnan(low) or not low > now:
        return ApplyDecision(
            False,
            f"{winner.name}'s lower bound {low:.5f} does not beat the current settings' "
            f"estimate {now:.5f}",
        )
    return ApplyDecision(
        True,
        f"{winner.name}'s lower bound {low:.5f} beats the current settings' estimate {now:.5f}",
    )


def _score(data: RunData, cand: Candidate, estimator: str) -> CandidateScore:
    try:
        scored = train_and_score(data, cand.vw_arguments(), cand.name)
    except CandidateFailed as exc:
        logger.warning("candidate %s failed: %s", cand.name, exc)
        return CandidateScore(cand, None, error=str(exc))
    estimates = dict(scored.result.estimates)
    return CandidateScore(
        cand,
        estimates.get(estimator),
        estimates,
        scored.examples,
        scored.seconds,
        result=scored.result,
    )


def run_search(
    store: ObjectStore,
    name: str,
    experiment: ExperimentSettings,
    joins: Sequence[FinishedJoin],
    candidates: Sequence[Candidate],
    *,
    options: SearchOptions | None = None,
    on_prepared: Callable[[int], None] | None = None,
    on_scored: Callable[[CandidateScore], None] | None = None,
    work_dir: Path | None = None,
) -> SearchResult:
    """Score the current settings and every candidate; `on_prepared(total)` is called once
    the eval events and reward model are ready, `on_scored` after each candidate."""
    options = options or SearchOptions()
    current = current_candidate(experiment)
    todo = [current] + [c for c in candidates if c.key() != current.key()]
    with prepared(
        store,
        joins,
        experiment.vw_arguments(),
        folds=options.folds,
        seed=options.seed,
        confidence=options.confidence,
        work_dir=work_dir,
    ) as data:
        if on_prepared is not None:
            on_prepared(len(todo))
        scores: dict[str, CandidateScore] = {}
        with ThreadPoolExecutor(max_workers=options.parallel, thread_name_prefix="search") as pool:
            futures: dict[Future[CandidateScore], str] = {
                pool.submit(_score, data, c, options.estimator): c.name for c in todo
            }
            for future in as_completed(futures):
                score = future.result()
                scores[score.name] = score
                if on_scored is not None:
                    on_scored(score)
        eval_events = data.eval_events
    # Ties keep grid order (stable sort), the current settings first.
    order = {c.name: i for i, c in enumerate(todo)}
    ranked = sorted(scores.values(), key=lambda s: (-s.value, order[s.name]))
    base = scores[current.name]
    top = ranked[0]
    lift = None
    if top.result is not None and base.result is not None:
        lift = paired_difference(top.result, base.result, options.estimator, options.confidence)
    logger.info(
        "search of %s: %d candidates on %d eval events; winner %s",
        name,
        len(ranked),
        eval_events,
        top.name,
    )
    return SearchResult(name, options, ranked, base, data.joins, eval_events, lift)
