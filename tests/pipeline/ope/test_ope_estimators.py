from __future__ import annotations

import math

import numpy as np
import pytest

from cbloop_pipeline.ope.estimators import (
    DR,
    IPS,
    SNIPS,
    Estimator,
    LoggingPolicyMean,
    effective_sample_size,
    estimate_all,
    on_policy_mean,
    z_value,
)
from cbloop_pipeline.ope.feedback import BanditFeedback, InvalidFeedback

# Hand example: weights w = target / logged = [2, 0, 1, 0.5].
REWARD = [1.0, 0.0, 1.0, 0.5]
LOGGED = [0.5, 0.5, 0.25, 1.0]
TARGET = [1.0, 0.0, 0.25, 0.5]
DM_LOGGED = [0.5, 0.5, 0.5, 0.5]
DM_POLICY = [0.6, 0.4, 0.5, 0.5]
Z95 = 1.959963984540054


@pytest.fixture
def hand() -> BanditFeedback:
    return BanditFeedback(
        reward=REWARD,
        logged_probability=LOGGED,
        target_probability=TARGET,
        dm_logged=DM_LOGGED,
        dm_policy=DM_POLICY,
    )


def _sample_sd(xs: list[float]) -> float:
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def test_ess_and_max_weight_on_hand_example(hand: BanditFeedback) -> None:
    # (2 + 0 + 1 + 0.5)^2 / (4 + 0 + 1 + 0.25) = 12.25 / 5.25
    expected_ess = 7.0 / 3.0

    for est in estimate_all(hand).values():
        assert est.ess == pytest.approx(expected_ess)
        assert est.max_weight == 2.0
        assert est.n == 4


def test_effective_sample_size_extremes() -> None:
    assert effective_sample_size(np.ones(10)) == pytest.approx(10.0)
    assert effective_sample_size(np.array([0.0, 0.0, 5.0])) == pytest.approx(1.0)
    assert effective_sample_size(np.zeros(3)) == 0.0


def test_ips_on_hand_example(hand: BanditFeedback) -> None:
    terms = [2.0 * 1.0, 0.0, 1.0 * 1.0, 0.5 * 0.5]
    se = _sample_sd(terms) / 2.0

    # Wide bounds: the formula's own interval (clipping is tested on its own below).
    est = IPS(bounds=(-10.0, 10.0)).estimate(hand)

    assert est.name == "ips"
    assert est.value == pytest.approx(0.8125)
    assert est.std_error == pytest.approx(se)
    assert est.ci_low == pytest.approx(0.8125 - Z95 * se)
    assert est.ci_high == pytest.approx(0.8125 + Z95 * se)


def test_snips_on_hand_example(hand: BanditFeedback) -> None:
    value = 3.25 / 3.5
    resid = [2.0 * (1.0 - value), 0.0, 1.0 * (1.0 - value), 0.5 * (0.5 - value)]
    se = math.sqrt(sum(r * r for r in resid)) / 3.5

    est = SNIPS(bounds=(-10.0, 10.0)).estimate(hand)

    assert est.value == pytest.approx(13.0 / 14.0)
    assert est.std_error == pytest.approx(se)
    assert (est.ci_low, est.ci_high) == pytest.approx((value - Z95 * se, value + Z95 * se))


def test_dr_on_hand_example(hand: BanditFeedback) -> None:
    # g_i + w_i (r_i - r_hat_i)
    terms = [0.6 + 2 * 0.5, 0.4 + 0.0, 0.5 + 1 * 0.5, 0.5 + 0.5 * 0.0]

    est = DR().estimate(hand)

    assert est.value == pytest.approx(0.875)
    assert est.std_error == pytest.approx(_sample_sd(terms) / 2.0)


def test_every_estimator_is_nan_with_a_reason_when_every_weight_is_zero() -> None:
    # The target never picks a logged action: no logged reward says anything about it, so
    # no estimator may report a value, let alone the falsely certain IPS interval [0, 0].
    fb = BanditFeedback(
        reward=[1.0, 0.0],
        logged_probability=[0.5, 0.5],
        target_probability=[0.0, 0.0],
        dm_logged=[0.3, 0.3],
        dm_policy=[0.7, 0.7],
    )

    estimates = estimate_all(fb)

    assert set(estimates) == {"ips", "snips", "dr", "sndr", "switch_dr"}
    for est in estimates.values():
        assert math.isnan(est.value) and math.isnan(est.ci_low) and math.isnan(est.ci_high)
        assert est.reason is not None and "every importance weight is zero" in est.reason
        assert not est.defined


def test_on_policy_mean_is_mean_reward_with_unit_weights() -> None:
    est = on_policy_mean(np.array([1.0, 0.0, 1.0, 1.0]))

    assert est.name == "logging"
    assert est.value == 0.75
    assert est.std_error == pytest.approx(_sample_sd([1.0, 0.0, 1.0, 1.0]) / 2.0)
    assert est.ess == 4.0
    assert est.max_weight == 1.0


def test_logging_policy_estimator_matches_on_policy_mean(hand: BanditFeedback) -> None:
    assert LoggingPolicyMean().estimate(hand) == on_policy_mean(hand.reward)


def test_on_policy_mean_rejects_non_finite_reward() -> None:
    with pytest.raises(InvalidFeedback) as err:
        on_policy_mean(np.array([1.0, math.nan]))

    assert err.value.field == "reward"


def test_estimate_all_includes_dr_only_with_a_reward_model(hand: BanditFeedback) -> None:
    without = BanditFeedback(reward=REWARD, logged_probability=LOGGED, target_probability=TARGET)

    assert set(estimate_all(hand)) == {"ips", "snips", "dr", "sndr", "switch_dr"}
    assert set(estimate_all(without)) == {"ips", "snips"}


def test_single_event_has_undefined_standard_error() -> None:
    fb = BanditFeedback(reward=[1.0], logged_probability=[0.5], target_probability=[0.5])

    for est in estimate_all(fb).values():
        assert est.value == pytest.approx(1.0)
        assert math.isnan(est.std_error)
        assert math.isnan(est.ci_low)


def test_snips_is_undefined_when_target_never_picks_a_logged_action() -> None:
    fb = BanditFeedback(reward=[1.0, 0.0], logged_probability=[0.5, 0.5], target_probability=[0, 0])

    est = SNIPS().estimate(fb)

    assert math.isnan(est.value)
    assert math.isnan(IPS().estimate(fb).value)


def test_confidence_level_sets_interval_width(hand: BanditFeedback) -> None:
    wide = IPS(confidence=0.99).estimate(hand)
    narrow = IPS(confidence=0.90).estimate(hand)

    assert z_value(0.95) == pytest.approx(Z95)
    assert wide.ci_high - wide.ci_low > narrow.ci_high - narrow.ci_low
    with pytest.raises(ValueError, match="confidence"):
        z_value(1.0)


def test_estimators_satisfy_the_estimator_interface() -> None:
    for est in (IPS(), SNIPS(), DR(), LoggingPolicyMean()):
        assert isinstance(est, Estimator)
    assert [e.name for e in (IPS(), SNIPS(), DR(), LoggingPolicyMean())] == [
        "ips",
        "snips",
        "dr",
        "logging",
    ]


def test_estimate_serialises_to_plain_dict(hand: BanditFeedback) -> None:
    d = IPS().estimate(hand).to_dict()

    assert set(d) == {
        "name",
        "value",
        "ci_low",
        "ci_high",
        "n",
        "ess",
        "max_weight",
        "std_error",
        "reason",
        "raw_value",
        "interval",
    }
