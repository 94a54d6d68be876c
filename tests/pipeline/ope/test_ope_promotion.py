"""The promotion rule's baselines and the baseline's own uncertainty."""

from __future__ import annotations

from typing import Any

import pytest

from cbloop.settings import PromotionSettings
from cbloop_pipeline.deploy import promotion_verdict
from cbloop_pipeline.evaluate import baseline_of


def _est(value: float, se: float, n: int = 1000) -> dict[str, Any]:
    return {
        "value": value,
        "std_error": se,
        "ci_low": value - 1.96 * se,
        "ci_high": value + 1.96 * se,
        "n": n,
    }


def _evaluation(*, on_policy: dict[str, Any] | None, deployed_dr: float = 0.40) -> dict[str, Any]:
    deployed: dict[str, Any] = {"dr": _est(deployed_dr, 0.01), "sndr": _est(deployed_dr, 0.01)}
    if on_policy is not None:
        deployed["on_policy"] = on_policy
    return {
        "eval_id": "ev-1",
        "n_events": 5000,
        "confidence": 0.95,
        "deployed_model_id": "m-dep",
        "policies": {
            "candidate": {"estimates": {"dr": _est(0.50, 0.02), "sndr": _est(0.52, 0.02)}},
            "deployed": {"model_id": "m-dep", "estimates": deployed},
            "logging": {"estimates": {"logging": _est(0.30, 0.01)}},
        },
    }


def test_on_policy_value_is_the_baseline_when_the_deployed_model_served_enough_events() -> None:
    evaluation = _evaluation(on_policy=_est(0.45, 0.02, n=800))

    verdict = promotion_verdict(PromotionSettings(), evaluation, "m-dep")

    assert verdict.baseline == "deployed_on_policy"
    assert verdict.deployed_value == 0.45
    assert verdict.promoted  # 0.50 > 0.45
    assert "on-policy mean reward (on the 800 events it served)" in verdict.reason


def test_too_few_served_events_fall_back_to_the_deployed_models_estimate() -> None:
    evaluation = _evaluation(on_policy=_est(0.45, 0.02, n=20))

    verdict = promotion_verdict(PromotionSettings(min_events=100), evaluation, "m-dep")

    assert verdict.baseline == "deployed_ope"
    assert verdict.deployed_value == 0.40


def test_lower_bound_rule_counts_the_on_policy_baselines_uncertainty() -> None:
    # Candidate 0.50 (se 0.02), on-policy 0.45 (se 0.02): the difference 0.05 has
    # se 0.028, so its lower bound is about -0.005 and the rule must not promote, although
    # the candidate's own lower bound (0.461) is above the baseline's point value (0.45).
    evaluation = _evaluation(on_policy=_est(0.45, 0.02, n=800))
    rule = PromotionSettings(use_lower_bound=True)

    verdict = promotion_verdict(rule, evaluation, "m-dep")

    assert not verdict.promoted
    assert "lower bound of candidate dr" in verdict.reason
    assert verdict.baseline == "deployed_on_policy"
    sure = _evaluation(on_policy=_est(0.40, 0.005, n=800))
    assert promotion_verdict(rule, sure, "m-dep").promoted  # 0.10 - 1.96 * 0.0206 > 0


@pytest.mark.parametrize("estimator", ["ips", "snips", "dr", "sndr", "switch_dr"])
def test_promotion_accepts_every_estimator(estimator: str) -> None:
    rule = PromotionSettings(estimator=estimator)  # type: ignore[arg-type]

    kind, _ = baseline_of(_evaluation(on_policy=None)["policies"], rule.estimator, 0)

    assert rule.estimator == estimator
    assert kind in ("deployed_ope", "logging_policy")


def test_no_deployed_model_compares_with_the_logging_policy() -> None:
    evaluation = _evaluation(on_policy=None)
    evaluation["deployed_model_id"] = None
    evaluation["policies"]["deployed"] = None

    verdict = promotion_verdict(PromotionSettings(estimator="sndr"), evaluation, None)

    assert verdict.baseline == "logging_policy"
    assert verdict.promoted  # 0.52 > 0.30
