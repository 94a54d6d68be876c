"""Per-event values of an estimator, and paired differences of two policies on one sample.

Each estimator is (asymptotically) a mean of per-event terms t_i (its `terms`), with
w_i = pi_i / mu_i, e.g.:
    IPS:   t_i = w_i r_i
    DR:    t_i = g_i + w_i (r_i - r_hat_i)
    SNIPS: t_i = V + w_i (r_i - V) / mean(w)   (the delta-method linearisation of the ratio)
Two policies scored on the same eval events with the same reward model give terms a_i, b_i
per event; d_i = a_i - b_i is one i.i.d. sample, so the difference of their values has the
interval mean(d) +/- z sd(d) / sqrt(n). The events' shared noise cancels, which makes it far
narrower than two separate intervals would suggest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cbloop_pipeline.ope.estimators import ESTIMATOR_NAMES, make_estimator, z_value
from cbloop_pipeline.ope.evaluate import EvaluationResult
from cbloop_pipeline.ope.logged import FloatArray

ESTIMATORS = ESTIMATOR_NAMES
SELF_NORMALISED = frozenset({"snips", "sndr"})


@dataclass(frozen=True)
class Difference:
    """value(a) - value(b) with its paired interval."""

    value: float
    ci_low: float
    ci_high: float
    std_error: float
    n: int

    def covers_zero(self) -> bool:
        return self.ci_low <= 0.0 <= self.ci_high

    def to_dict(self) -> dict[str, float | int | None]:
        return {
            k: (None if math.isnan(float(v)) else v)
            for k, v in {
                "value": self.value,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
                "std_error": self.std_error,
                "n": self.n,
            }.items()
        }


def per_event_terms(result: EvaluationResult, estimator: str) -> FloatArray:
    """The estimator's own per-event terms (their mean is its unclipped value)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    fb = result.feedback()
    if estimator in SELF_NORMALISED and not fb.weights.any():
        return np.full(fb.n, np.nan)  # undefined, like the estimate itself
    return np.asarray(make_estimator(estimator).terms(fb), dtype=np.float64)


def paired_difference(
    a: EvaluationResult, b: EvaluationResult, estimator: str, confidence: float
) -> Difference:
    """value(a) - value(b) on the same events (same order, as scored on one file)."""
    if not np.array_equal(a.event_id, b.event_id):
        raise ValueError("paired differences need the same events in the same order")
    d = per_event_terms(a, estimator) - per_event_terms(b, estimator)
    n = int(d.shape[0])
    value = float(d.mean()) if n else math.nan
    se = float(d.std(ddof=1)) / math.sqrt(n) if n >= 2 else math.nan
    half = z_value(confidence) * se
    return Difference(value, value - half, value + half, se, n)
