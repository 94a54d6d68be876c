"""SNDR, Switch-DR, range clipping and bootstrap intervals on tiny hand-computed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cbloop_pipeline.ope.estimators import (
    DR,
    ESTIMATOR_NAMES,
    IPS,
    SNDR,
    SNIPS,
    Bootstrap,
    Estimator,
    SwitchDR,
    make_estimator,
    on_policy_mean,
)
from cbloop_pipeline.ope.feedback import BanditFeedback

# Binary rewards; weights w = [2, 0, 4, 0.5].
REWARD = [1.0, 0.0, 1.0, 0.0]
LOGGED = [0.5, 0.5, 0.25, 1.0]
TARGET = [1.0, 0.0, 1.0, 0.5]
DM_LOGGED = [0.5, 0.5, 0.5, 0.5]
DM_POLICY = [0.6, 0.4, 0.5, 0.5]


@pytest.fixture
def fb() -> BanditFeedback:
    return BanditFeedback(
        reward=REWARD,
        logged_probability=LOGGED,
        target_probability=TARGET,
        dm_logged=DM_LOGGED,
        dm_policy=DM_POLICY,
    )


def test_sndr_self_normalises_the_correction_term(fb: BanditFeedback) -> None:
    # mean(g) = 0.5; corrections w (r - r_hat) = [1, 0, 2, -0.25], sum 2.75; sum w = 6.5.
    expected = 0.5 + 2.75 / 6.5

    est = SNDR().estimate(fb)

    assert est.name == "sndr"
    assert est.raw_value == pytest.approx(expected)
    assert est.value == pytest.approx(expected)
    # DR on the same input divides by n = 4 instead: 0.5 + 2.75 / 4.
    assert DR().estimate(fb).raw_value == pytest.approx(0.5 + 2.75 / 4)


def test_sndr_influence_terms_average_to_the_estimate(fb: BanditFeedback) -> None:
    terms = SNDR().terms(fb)

    assert float(terms.mean()) == pytest.approx(0.5 + 2.75 / 6.5)


def test_switch_dr_drops_the_correction_where_the_weight_exceeds_tau(fb: BanditFeedback) -> None:
    # tau = 3 keeps the corrections of w = 2 and w = 0.5 ([1, -0.25]) and drops w = 4's.
    expected = 0.5 + (1.0 + 0.0 + 0.0 - 0.25) / 4

    est = SwitchDR(tau=3.0).estimate(fb)

    assert est.name == "switch_dr"
    assert est.raw_value == pytest.approx(expected)
    # With tau above every weight it is DR; with tau below every weight the direct method.
    assert SwitchDR(tau=10.0).estimate(fb).raw_value == pytest.approx(DR().estimate(fb).raw_value)
    assert SwitchDR(tau=0.1).estimate(fb).raw_value == pytest.approx(0.5)


def test_values_and_intervals_are_clipped_to_the_reward_range(fb: BanditFeedback) -> None:
    # IPS = (2 + 4) / 4 = 1.5: an impossible click rate, and its interval reaches below 0.
    est = IPS().estimate(fb)

    assert est.raw_value == pytest.approx(1.5)
    assert est.value == 1.0
    assert est.ci_high == 1.0
    assert 0.0 <= est.ci_low <= 1.0
    for name in ESTIMATOR_NAMES:
        other = make_estimator(name).estimate(fb)
        assert 0.0 <= other.ci_low <= other.value <= other.ci_high <= 1.0, name


def test_explicit_bounds_clip_non_binary_rewards() -> None:
    fb = BanditFeedback(
        reward=[2.0, 0.0, 5.0], logged_probability=[0.5, 0.5, 0.5], target_probability=[1, 0, 1]
    )

    observed = IPS().estimate(fb)
    given = IPS(bounds=(0.0, 10.0)).estimate(fb)

    # Observed range [0, 5]: (4 + 10) / 3 = 4.67 stays, its upper bound is cut at 5.
    assert observed.value == pytest.approx(14.0 / 3.0)
    assert observed.ci_high == 5.0
    assert given.ci_high > 5.0


def test_on_policy_mean_interval_stays_in_the_range() -> None:
    est = on_policy_mean(np.array([0.0, 0.0, 0.0, 1.0]), name="on_policy")

    assert est.name == "on_policy"
    assert est.ci_low == 0.0
    assert est.value == 0.25


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate() -> None:
    rng = np.random.default_rng(0)
    n = 400
    logged = np.full(n, 0.5)
    target = rng.choice([0.0, 1.0], size=n)
    reward = (rng.random(n) < 0.3).astype(np.float64)
    fb = BanditFeedback(
        reward=reward,
        logged_probability=logged,
        target_probability=target,
        dm_logged=np.full(n, 0.3),
        dm_policy=np.full(n, 0.3),
    )

    first = Bootstrap(DR(), replicates=100, seed=1).estimate(fb)
    again = Bootstrap(DR(), replicates=100, seed=1).estimate(fb)
    normal = DR().estimate(fb)

    assert first == again
    assert first.interval == "bootstrap"
    assert first.value == normal.value
    assert first.ci_low < first.value < first.ci_high
    # Percentile and normal intervals agree roughly on a well-behaved sample.
    assert (first.ci_high - first.ci_low) == pytest.approx(normal.ci_high - normal.ci_low, rel=0.3)


def test_bootstrap_of_an_undefined_estimate_stays_undefined() -> None:
    fb = BanditFeedback(reward=[1.0, 0.0], logged_probability=[0.5, 0.5], target_probability=[0, 0])

    est = Bootstrap(SNIPS(), replicates=20).estimate(fb)

    assert math.isnan(est.value)
    assert est.reason is not None


def test_every_named_estimator_satisfies_the_interface() -> None:
    for name in ESTIMATOR_NAMES:
        est = make_estimator(name)
        assert isinstance(est, Estimator)
        assert est.name == name
    assert isinstance(Bootstrap(SwitchDR()), Estimator)
    with pytest.raises(ValueError, match="unknown estimator"):
        make_estimator("magic")
