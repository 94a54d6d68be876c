"""Per-event terms reproduce the OPE estimators; paired differences of a policy with itself
are exactly zero."""

from __future__ import annotations

import numpy as np
import pytest

from cbloop_pipeline.ope.estimators import ESTIMATOR_NAMES, estimate_all
from cbloop_pipeline.ope.evaluate import EvaluationResult
from cbloop_pipeline.ope.feedback import BanditFeedback
from cbloop_pipeline.tuning.paired import paired_difference, per_event_terms


def _result(seed: int, n: int = 400) -> EvaluationResult:
    rng = np.random.default_rng(seed)
    mu = np.full(n, 0.25)
    pi = rng.uniform(0.0, 1.0, n)
    reward = (rng.uniform(size=n) < 0.4).astype(np.float64)
    dm_logged = rng.uniform(0.2, 0.6, n)
    dm_policy = rng.uniform(0.2, 0.6, n)
    fb = BanditFeedback(
        reward=reward,
        logged_probability=mu,
        target_probability=pi,
        dm_logged=dm_logged,
        dm_policy=dm_policy,
    )
    ids = np.empty(n, dtype=object)
    ids[:] = [f"e{i}" for i in range(n)]
    estimates = estimate_all(fb)
    return EvaluationResult(
        event_id=ids,
        reward=reward,
        logged_probability=mu,
        target_probability=pi,
        dm_logged=dm_logged,
        dm_policy=dm_policy,
        estimates=estimates,
        logging_policy=estimates["ips"],
    )


@pytest.mark.parametrize("estimator", ESTIMATOR_NAMES)
def test_mean_of_per_event_terms_is_the_estimate(estimator: str) -> None:
    result = _result(1)
    terms = per_event_terms(result, estimator)
    assert terms.mean() == pytest.approx(result.estimates[estimator].raw_value, rel=1e-12)


def test_difference_of_a_policy_with_itself_is_zero_and_of_two_policies_is_paired() -> None:
    a, b = _result(1), _result(2)
    same = paired_difference(a, a, "dr", 0.95)
    assert same.value == 0.0 and same.ci_low == 0.0 and same.ci_high == 0.0
    d = paired_difference(a, b, "dr", 0.95)
    assert d.value == pytest.approx(a.estimates["dr"].value - b.estimates["dr"].value)
    assert d.ci_low < d.value < d.ci_high
