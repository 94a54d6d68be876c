"""Evaluate one target policy on one joined DSJSON file: every estimator and the logging policy.

To compare a candidate with the deployed model on the same data, fit the reward model once
(`fit_reward_model`) and pass it to both `evaluate_file` calls: the two DR estimates then
differ only through the policies, not through two independently noisy reward fits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cbloop_pipeline.ope.estimators import (
    DEFAULT_CONFIDENCE,
    ESTIMATOR_NAMES,
    Estimate,
    estimate_all,
    make_estimator,
    on_policy_mean,
)
from cbloop_pipeline.ope.features import read_events_and_features
from cbloop_pipeline.ope.feedback import BanditFeedback, InvalidFeedback
from cbloop_pipeline.ope.logged import FloatArray, LoggedEvents, ObjectArray
from cbloop_pipeline.ope.reward_model import DEFAULT_FOLDS, RewardModel, fit_cross_fitted
from cbloop_pipeline.ope.scoring import TargetScores, score_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class EvaluationResult:
    """Per-event arrays (file order) and the estimates computed from them.

    `estimates` holds every estimator's figure for the target policy; `terms` each estimator's
    per-event terms (their mean is the unclipped estimate; for SNIPS and SNDR the delta-method
    influence terms), for the audit file; `logging_policy` is the on-policy mean reward of
    whatever logged the data.
    """

    event_id: ObjectArray
    reward: FloatArray
    logged_probability: FloatArray
    target_probability: FloatArray
    dm_logged: FloatArray
    dm_policy: FloatArray
    estimates: Mapping[str, Estimate]
    logging_policy: Estimate
    terms: Mapping[str, FloatArray] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.reward.shape[0])

    def feedback(self) -> BanditFeedback:
        return BanditFeedback(
            reward=self.reward,
            logged_probability=self.logged_probability,
            target_probability=self.target_probability,
            dm_logged=self.dm_logged,
            dm_policy=self.dm_policy,
        )

    def all_estimates(self) -> dict[str, Estimate]:
        """The target policy's estimates plus "logging", e.g. for a summary file."""
        return {**self.estimates, self.logging_policy.name: self.logging_policy}


def _terms(fb: BanditFeedback) -> dict[str, FloatArray]:
    out: dict[str, FloatArray] = {}
    for name in ESTIMATOR_NAMES:
        if name in ("snips", "sndr") and not fb.weights.any():
            # Self-normalised terms divide by sum w; undefined like the estimate.
            out[name] = np.full(fb.n, np.nan)
            continue
        out[name] = make_estimator(name).terms(fb)
    return out


def evaluate_scores(
    logged: LoggedEvents,
    scores: TargetScores,
    reward_model: RewardModel,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    bootstrap: int = 0,
    seed: int = 0,
) -> EvaluationResult:
    """Combine already computed pieces (no VW run) into an `EvaluationResult`."""
    reward_model.check_matches(logged)
    fb = BanditFeedback(
        reward=logged.reward,
        logged_probability=logged.logged_probability,
        target_probability=scores.target_probability,
        dm_logged=reward_model.dm_logged(logged.logged_action),
        dm_policy=reward_model.dm_policy(scores.pmf),
    )
    bounds = reward_model.bounds
    estimates = estimate_all(
        fb, confidence=confidence, bounds=bounds, bootstrap=bootstrap, seed=seed
    )
    logging_policy = on_policy_mean(fb.reward, confidence=confidence, bounds=bounds)
    return EvaluationResult(
        event_id=logged.event_id,
        reward=fb.reward,
        logged_probability=fb.logged_probability,
        target_probability=fb.target_probability,
        dm_logged=np.asarray(fb.dm_logged),
        dm_policy=np.asarray(fb.dm_policy),
        estimates=estimates,
        logging_policy=logging_policy,
        terms=_terms(fb),
    )


def evaluate_file(
    eval_path: Path,
    model_path: Path,
    vw_args: str,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    reward_model: RewardModel | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    tmp_dir: Path | None = None,
) -> EvaluationResult:
    """Off-policy evaluation of the policy in `model_path` on the joined file `eval_path`.

    Args:
        eval_path: joined DSJSON of the eval split (labels first).
        model_path: VW model of the target policy.
        vw_args: the experiment's full VW arguments (`ExperimentSettings.vw_arguments()`).
        folds, seed: cross-fitting of the reward model; ignored when `reward_model` is given.
        reward_model: a model from `fit_reward_model` on the same file, to share one fit
            between several policies; raises `RewardModelMismatch` if fitted on other events.
        confidence: two-sided confidence of the intervals.
        tmp_dir: where temporary files go (default: system temp).
    """
    logged, features, _ = read_events_and_features(eval_path)
    if logged.n == 0:
        raise InvalidFeedback("reward", f"no events in {eval_path}")
    if reward_model is None:
        reward_model = fit_cross_fitted(logged, features, folds=folds, seed=seed)
    else:
        reward_model.check_matches(logged)
    scores = score_file(eval_path, model_path, vw_args, logged=logged, tmp_dir=tmp_dir)
    result = evaluate_scores(logged, scores, reward_model, confidence=confidence)
    for est in result.all_estimates().values():
        logger.info(
            "%s of %s on %s: %.5f [%.5f, %.5f] n=%d ess=%.1f max_w=%.2f",
            est.name,
            model_path.name,
            eval_path.name,
            est.value,
            est.ci_low,
            est.ci_high,
            est.n,
            est.ess,
            est.max_weight,
        )
    return result
