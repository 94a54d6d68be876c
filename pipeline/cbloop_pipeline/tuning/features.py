"""`cbloop features`: how much each namespace is worth to the current settings.

For each VW namespace (keyed by its first character, so names that collide are left out
together) a fresh model is trained with the current settings plus `--ignore <char>`, and
scored on the eval events next to the full model. The reported change is
value(full) - value(without): positive means the namespace helps. Its interval is paired
(per-event differences on the same events with the same reward model, see
tuning.paired), so it measures the namespace, not the noise of the eval sample.

That interval covers the eval sample's noise only, not the randomness of training: a
namespace VW cannot use still changes the step sizes of the others' updates, so dropping it
moves the estimate by a tiny amount with an even tinier paired interval. The verdict
therefore also needs the change to matter: "negligible" below `min_effect` (reward per
event), "helps"/"hurts" when the interval excludes 0 and the change is at least
`min_effect`, "unclear" otherwise.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbloop.settings import ExperimentSettings
from cbloop.storage import ObjectStore
from cbloop_pipeline.join_catalog import FinishedJoin
from cbloop_pipeline.ope.estimators import Estimate
from cbloop_pipeline.ope.evaluate import EvaluationResult
from cbloop_pipeline.tuning.feature_stats import DataStats, DataWarning, collect
from cbloop_pipeline.tuning.paired import Difference, paired_difference
from cbloop_pipeline.tuning.runs import (
    CandidateFailed,
    RunData,
    estimate_dict,
    prepared,
    train_and_score,
)
from cbloop_pipeline.tuning.search import PARALLEL, SearchOptions

logger = logging.getLogger(__name__)

FULL = "(all)"
#: Default smallest change of the value per event that counts as an effect.
MIN_EFFECT = 0.01


@dataclass(frozen=True)
class NamespaceEffect:
    char: str
    namespaces: tuple[str, ...]
    estimate: Estimate | None
    #: value(full) - value(without this namespace); None when the run failed.
    delta: Difference | None
    error: str | None = None
    min_effect: float = MIN_EFFECT

    @property
    def verdict(self) -> str:
        d = self.delta
        if d is None:
            return "failed"
        if abs(d.value) < self.min_effect:
            return "negligible"
        if d.ci_low > 0:
            return "helps"
        if d.ci_high < 0:
            return "hurts"
        return "unclear"

    def to_dict(self) -> dict[str, Any]:
        return {
            "vw_namespace": self.char,
            "namespaces": list(self.namespaces),
            "estimate_without": estimate_dict(self.estimate) if self.estimate else None,
            "delta": self.delta.to_dict() if self.delta else None,
            "verdict": self.verdict,
            "error": self.error,
        }


@dataclass(frozen=True)
class FeatureReport:
    experiment: str
    options: SearchOptions
    vw_arguments: str
    full: Estimate
    effects: list[NamespaceEffect]
    warnings: list[DataWarning]
    eval_events: int
    joins: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "estimator": self.options.estimator,
            "confidence": self.options.confidence,
            "vw_arguments": self.vw_arguments,
            "joins": list(self.joins),
            "eval_events": self.eval_events,
            "full": estimate_dict(self.full),
            "min_effect": self.effects[0].min_effect if self.effects else MIN_EFFECT,
            "namespaces": [e.to_dict() for e in self.effects],
            "warnings": [w.to_dict() for w in self.warnings],
        }


def ignoring(experiment: ExperimentSettings, char: str) -> str:
    """The experiment's full VW arguments with namespace `char` ignored."""
    return shlex.join([*shlex.split(experiment.vw_arguments()), "--ignore", char])


def _run(data: RunData, vw_arguments: str, label: str) -> EvaluationResult | str:
    try:
        return train_and_score(data, vw_arguments, label).result
    except CandidateFailed as exc:
        logger.warning("%s failed: %s", label, exc)
        return str(exc)


def _worth(effect: NamespaceEffect) -> float:
    """Sort key: the value a namespace adds; failed runs last."""
    d = effect.delta
    return d.value if d is not None and not math.isnan(d.value) else -math.inf


def evaluate_features(
    store: ObjectStore,
    name: str,
    experiment: ExperimentSettings,
    joins: Sequence[FinishedJoin],
    *,
    options: SearchOptions | None = None,
    min_effect: float = MIN_EFFECT,
    on_prepared: Callable[[int], None] | None = None,
    on_done: Callable[[str], None] | None = None,
    work_dir: Path | None = None,
) -> FeatureReport:
    """Leave-one-namespace-out estimates of `experiment`'s current settings."""
    options = options or SearchOptions()
    estimator = options.estimator
    full_args = experiment.vw_arguments()
    with prepared(
        store,
        joins,
        full_args,
        folds=options.folds,
        seed=options.seed,
        confidence=options.confidence,
        work_dir=work_dir,
    ) as data:
        stats: DataStats = collect([*data.train_paths, *data.eval_paths])
        groups = stats.groups()
        if on_prepared is not None:
            on_prepared(len(groups) + 1)
        runs: dict[str, EvaluationResult | str] = {}
        with ThreadPoolExecutor(
            max_workers=options.parallel, thread_name_prefix="features"
        ) as pool:
            futures: dict[Future[EvaluationResult | str], str] = {
                pool.submit(_run, data, full_args, "full"): FULL
            }
            for char in groups:
                futures[pool.submit(_run, data, ignoring(experiment, char), f"ignore-{char}")] = (
                    char
                )
            for future in as_completed(futures):
                runs[futures[future]] = future.result()
                if on_done is not None:
                    on_done(futures[future])
        eval_events = data.eval_events
    full = runs[FULL]
    if isinstance(full, str):
        raise CandidateFailed(f"the current settings could not be trained and scored: {full}")
    effects = []
    for char, names in groups.items():
        run = runs[char]
        if isinstance(run, str):
            effects.append(NamespaceEffect(char, tuple(names), None, None, run, min_effect))
            continue
        delta = paired_difference(full, run, estimator, options.confidence)
        effects.append(
            NamespaceEffect(
                char, tuple(names), run.estimates.get(estimator), delta, None, min_effect
            )
        )
    effects.sort(key=_worth, reverse=True)
    return FeatureReport(
        name,
        options,
        full_args,
        full.estimates[estimator],
        effects,
        stats.warnings(),
        eval_events,
        data.joins,
    )


__all__ = ["PARALLEL", "FeatureReport", "NamespaceEffect", "evaluate_features", "ignoring"]
