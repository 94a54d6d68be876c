"""Off-policy value estimators with normal-approximation confidence intervals.

Notation, per logged event i = 1..n: context x_i, logged action a_i, reward r_i, logging
propensity mu_i = mu(a_i|x_i), target propensity pi_i = pi(a_i|x_i), importance weight
w_i = pi_i / mu_i; a reward model r_hat gives r_hat_i = r_hat(x_i, a_i) and
g_i = sum_a pi(a|x_i) r_hat(x_i, a).

Every interval is value +/- z * std_error with z the standard normal quantile of the
requested two-sided confidence (1.96 for 95 %). For estimators that are means of i.i.d.
per-event terms t_i (IPS, DR, on-policy mean) std_error = s / sqrt(n) with s the sample
standard deviation (ddof=1) of t_i. SNIPS is a ratio and uses the delta method.

Small samples with binary rewards: when every reward is 0 or 1, the variance used is
max(sample variance, Bernoulli noise floor), so that a sample without a single failure (or
success) does not pass for a noiseless one. The floor is the reward noise sum_i w_i^2 m_i
(1 - m_i) / n^2 every term carries (a lower bound by the law of total variance), at the
least noise m (1 - m) = delta (1 - delta) that ess Bernoulli trials cannot rule out,
delta = (z^2/2) / (ess + z^2) (Agresti-Coull pseudo-observations):
    std_error = sqrt(max(s^2 / n, delta (1 - delta) sum w^2 / n^2))   (IPS, DR, on-policy)
    std_error = sqrt(max(delta-method var, delta (1 - delta) / ess))  (SNIPS)
It binds only when (almost) no failure or success shows up. See pipeline.ope.noise_floor
for the derivation and references. Point estimates are unaffected; with non-binary rewards
nothing changes.

When a quantity is undefined (std_error with one event; SNIPS when every weight is zero) it
is NaN: a NaN lower bound never compares greater than anything, so a promotion rule cannot
be passed by an estimate that carries no information.

References:
    Horvitz & Thompson (1952), "A generalization of sampling without replacement from a
        finite universe", JASA 47 (IPS).
    Kong (1992), "A note on importance sampling using standardized weights", tech. rep. 348,
        U. Chicago; Owen (2013), "Monte Carlo theory, methods and examples", ch. 9
        (effective sample size; self-normalised importance sampling and its delta-method
        variance, eq. 9.8).
    Swaminathan & Joachims (2015), "The self-normalized estimator for counterfactual
        learning", NeurIPS (SNIPS).
    Dudik, Langford & Li (2011), "Doubly robust policy evaluation and learning", ICML (DR).
    Agresti & Coull (1998), "Approximate is better than 'exact' for interval estimation of
        binomial proportions", The American Statistician 52(2) (the floors' pseudo-counts).
    Saito et al. (2021), "Open Bandit Dataset and Pipeline", NeurIPS Datasets & Benchmarks
        (the estimator-object layout this module follows in spirit).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Protocol, runtime_checkable

import numpy as np

from cbloop_pipeline.ope.feedback import BanditFeedback, FloatArray, InvalidFeedback
from cbloop_pipeline.ope.noise_floor import mean_variance_floor, ratio_variance_floor

logger = logging.getLogger(__name__)

DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Estimate:
    """One policy-value estimate.

    Attributes:
        name: estimator name ("ips", "snips", "dr", "logging").
        value: point estimate of the expected reward per event.
        ci_low, ci_high: two-sided normal-approximation confidence interval
            value +/- z * std_error.
        n: number of events used.
        ess: effective sample size (sum w)^2 / sum w^2 of the importance weights.
        max_weight: largest importance weight.
        std_error: estimated standard error of `value` (with binary rewards never below
            the Bernoulli noise floor, see pipeline.ope.noise_floor).
    """

    name: str
    value: float
    ci_low: float
    ci_high: float
    n: int
    ess: float
    max_weight: float
    std_error: float

    def to_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


@runtime_checkable
class Estimator(Protocol):
    """Anything that turns bandit feedback into an `Estimate` of a target policy's value."""

    @property
    def name(self) -> str: ...

    def estimate(self, fb: BanditFeedback) -> Estimate: ...


def z_value(confidence: float) -> float:
    """Two-sided standard normal quantile, e.g. 1.959964 for 0.95."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def effective_sample_size(weights: FloatArray) -> float:
    """(sum w)^2 / sum w^2 (Kong 1992); 0 when every weight is zero."""
    sq = float(np.dot(weights, weights))
    if sq == 0.0:
        return 0.0
    total = float(weights.sum())
    return total * total / sq


def _std_error_of_mean(terms: FloatArray) -> float:
    n = terms.shape[0]
    if n < 2:
        return math.nan
    return float(terms.std(ddof=1)) / math.sqrt(n)


def _floored(std_error: float, variance_floor: float) -> float:
    """sqrt(max(std_error^2, floor)); an undefined (NaN) standard error stays undefined."""
    if math.isnan(std_error):
        return std_error
    return math.sqrt(max(std_error * std_error, variance_floor))


def _estimate(
    name: str, value: float, std_error: float, weights: FloatArray, confidence: float
) -> Estimate:
    half = z_value(confidence) * std_error
    return Estimate(
        name=name,
        value=value,
        ci_low=value - half,
        ci_high=value + half,
        n=int(weights.shape[0]),
        ess=effective_sample_size(weights),
        max_weight=float(weights.max()),
        std_error=std_error,
    )


@dataclass(frozen=True)
class IPS:
    """Inverse propensity scoring.

    V_IPS = (1/n) sum_i w_i r_i, unbiased when mu_i > 0 wherever pi puts mass.
    std_error = sd(w_i r_i) / sqrt(n) (sample sd, ddof=1); with binary rewards
    std_error^2 = max(sd^2 / n, delta (1 - delta) sum_i w_i^2 / n^2),
    delta = (z^2/2) / (ess + z^2), the Agresti-Coull noise of an all-success sample
    (pipeline.ope.noise_floor.mean_variance_floor).
    """

    confidence: float = DEFAULT_CONFIDENCE

    @property
    def name(self) -> str:
        return "ips"

    def estimate(self, fb: BanditFeedback) -> Estimate:
        w = fb.weights
        terms = w * fb.reward
        floor = mean_variance_floor(fb.reward, w, z_value(self.confidence))
        std_error = _floored(_std_error_of_mean(terms), floor)
        return _estimate(self.name, float(terms.mean()), std_error, w, self.confidence)


@dataclass(frozen=True)
class SNIPS:
    """Self-normalised IPS.

    V_SNIPS = sum_i w_i r_i / sum_i w_i (biased but consistent; bounded by the reward range).
    Delta-method variance of the ratio (Owen 2013, eq. 9.8):
        std_error^2 = sum_i w_i^2 (r_i - V_SNIPS)^2 / (sum_i w_i)^2,
    with binary rewards at least delta (1 - delta) / ess, delta = (z^2/2) / (ess + z^2)
    (pipeline.ope.noise_floor.ratio_variance_floor).
    Undefined (NaN) when every weight is zero, i.e. the target policy never picks a logged
    action.
    """

    confidence: float = DEFAULT_CONFIDENCE

    @property
    def name(self) -> str:
        return "snips"

    def estimate(self, fb: BanditFeedback) -> Estimate:
        w = fb.weights
        total = float(w.sum())
        if total == 0.0:
            logger.warning("SNIPS undefined: the target policy gives zero weight to every event")
            return _estimate(self.name, math.nan, math.nan, w, self.confidence)
        value = float(np.dot(w, fb.reward)) / total
        resid = w * (fb.reward - value)
        std_error = math.sqrt(float(np.dot(resid, resid))) / total if fb.n >= 2 else math.nan
        std_error = _floored(
            std_error, ratio_variance_floor(fb.reward, w, z_value(self.confidence))
        )
        return _estimate(self.name, value, std_error, w, self.confidence)


@dataclass(frozen=True)
class DR:
    """Doubly robust estimator.

    V_DR = (1/n) sum_i [ g_i + w_i (r_i - r_hat_i) ], unbiased if either the propensities or
    the reward model are correct; with a cross-fitted reward model (no event scored by a model
    fitted on it) the per-event terms stay independent, so
    std_error = sd(terms) / sqrt(n) (sample sd, ddof=1); with binary rewards
    std_error^2 = max(sd^2 / n, delta (1 - delta) sum_i w_i^2 / n^2),
    delta = (z^2/2) / (ess + z^2): the least reward noise that w_i (r_i - r_hat_i) carries,
    which an all-success sample does not show (pipeline.ope.noise_floor.mean_variance_floor;
    the same floor as IPS: it does not trust the reward model's own idea of the noise).
    Needs `dm_logged` (r_hat_i) and `dm_policy` (g_i) in the feedback.
    """

    confidence: float = DEFAULT_CONFIDENCE

    @property
    def name(self) -> str:
        return "dr"

    def estimate(self, fb: BanditFeedback) -> Estimate:
        if fb.dm_logged is None:
            raise InvalidFeedback("dm_logged", "DR needs reward-model estimates")
        if fb.dm_policy is None:
            raise InvalidFeedback("dm_policy", "DR needs reward-model estimates")
        w = fb.weights
        terms = fb.dm_policy + w * (fb.reward - fb.dm_logged)
        floor = mean_variance_floor(fb.reward, w, z_value(self.confidence))
        std_error = _floored(_std_error_of_mean(terms), floor)
        return _estimate(self.name, float(terms.mean()), std_error, w, self.confidence)


@dataclass(frozen=True)
class LoggingPolicyMean:
    """On-policy value of the logging policy: the mean observed reward.

    V = (1/n) sum_i r_i, std_error = sd(r_i) / sqrt(n), with binary rewards at least
    sqrt(delta (1 - delta) / n), delta = (z^2/2) / (n + z^2): the Agresti-Coull standard error
    of an all-success sample. All weights are 1, so ess = n.
    """

    confidence: float = DEFAULT_CONFIDENCE

    @property
    def name(self) -> str:
        return "logging"

    def estimate(self, fb: BanditFeedback) -> Estimate:
        return on_policy_mean(fb.reward, confidence=self.confidence)


def on_policy_mean(reward: FloatArray, *, confidence: float = DEFAULT_CONFIDENCE) -> Estimate:
    """Mean reward with a normal-approximation interval (the logging policy's own value).

    IPS with every weight 1, including its binary-reward noise floor.
    """
    r = np.asarray(reward, dtype=np.float64)
    if r.ndim != 1 or r.shape[0] == 0:
        raise InvalidFeedback("reward", "needs a non-empty one-dimensional array")
    if not np.isfinite(r).all():
        raise InvalidFeedback("reward", "contains non-finite values")
    ones = np.ones_like(r)
    floor = mean_variance_floor(r, ones, z_value(confidence))
    std_error = _floored(_std_error_of_mean(r), floor)
    return _estimate("logging", float(r.mean()), std_error, ones, confidence)


def default_estimators(confidence: float = DEFAULT_CONFIDENCE) -> tuple[Estimator, ...]:
    return (IPS(confidence), SNIPS(confidence), DR(confidence))


def estimate_all(
    fb: BanditFeedback, *, confidence: float = DEFAULT_CONFIDENCE
) -> dict[str, Estimate]:
    """IPS and SNIPS always, DR when the feedback carries reward-model estimates."""
    out: dict[str, Estimate] = {}
    for est in default_estimators(confidence):
        if isinstance(est, DR) and not fb.has_reward_model:
            logger.info("skipping DR: feedback has no reward-model estimates")
            continue
        out[est.name] = est.estimate(fb)
    return out
