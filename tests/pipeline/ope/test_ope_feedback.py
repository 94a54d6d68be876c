from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from cbloop_pipeline.ope.estimators import DR
from cbloop_pipeline.ope.feedback import BanditFeedback, InvalidFeedback


def _valid() -> dict[str, Any]:
    return {
        "reward": [1.0, 0.0, 0.5],
        "logged_probability": [0.5, 1.0, 0.25],
        "target_probability": [1.0, 0.0, 0.5],
        "dm_logged": [0.4, 0.2, 0.3],
        "dm_policy": [0.5, 0.1, 0.3],
    }


def test_valid_feedback_is_stored_as_read_only_float_vectors() -> None:
    fb = BanditFeedback(**_valid())

    assert fb.n == 3
    assert fb.reward.dtype == np.float64
    np.testing.assert_array_equal(fb.weights, [2.0, 0.0, 2.0])
    with pytest.raises(ValueError, match="read-only"):
        fb.reward[0] = 5.0


def test_feedback_does_not_freeze_the_callers_arrays() -> None:
    reward = np.array([1.0, 0.0, 0.5])
    BanditFeedback(**{**_valid(), "reward": reward})

    reward[0] = 2.0  # still writable: the feedback holds its own copy


def test_reward_model_fields_are_optional() -> None:
    fb = BanditFeedback(**{**_valid(), "dm_logged": None, "dm_policy": None})

    assert not fb.has_reward_model


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logged_probability", [0.5, 1.0]),
        ("target_probability", [0.5, 0.5, 0.5, 0.5]),
        ("dm_logged", [0.1]),
        ("dm_policy", [0.1, 0.2]),
    ],
)
def test_length_mismatch_names_the_field(field: str, value: list[float]) -> None:
    with pytest.raises(InvalidFeedback) as err:
        BanditFeedback(**{**_valid(), field: value})

    assert err.value.field == field
    assert field in str(err.value)


def test_length_mismatch_with_reward_names_both_arrays() -> None:
    with pytest.raises(InvalidFeedback) as err:
        BanditFeedback(**{**_valid(), "reward": [1.0, 0.0]})

    assert err.value.field == "logged_probability"
    assert "reward has 2" in str(err.value)


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("reward", math.nan),
        ("reward", math.inf),
        ("logged_probability", 0.0),
        ("logged_probability", -0.1),
        ("logged_probability", 1.5),
        ("logged_probability", math.nan),
        ("target_probability", -0.01),
        ("target_probability", 1.01),
        ("dm_logged", math.nan),
        ("dm_policy", -math.inf),
    ],
)
def test_out_of_range_or_non_finite_values_name_the_field(field: str, bad: float) -> None:
    values = _valid()
    values[field] = [values[field][0], bad, values[field][2]]

    with pytest.raises(InvalidFeedback) as err:
        BanditFeedback(**values)

    assert err.value.field == field
    assert "index 1" in str(err.value)


def test_empty_feedback_is_refused() -> None:
    with pytest.raises(InvalidFeedback) as err:
        BanditFeedback(reward=[], logged_probability=[], target_probability=[])

    assert err.value.field == "reward"


def test_two_dimensional_input_is_refused() -> None:
    with pytest.raises(InvalidFeedback) as err:
        BanditFeedback(**{**_valid(), "target_probability": [[1.0, 0.0, 0.5]]})

    assert err.value.field == "target_probability"


def test_non_numeric_input_is_refused() -> None:
    with pytest.raises(InvalidFeedback) as err:
        BanditFeedback(**{**_valid(), "reward": ["a", "b", "c"]})

    assert err.value.field == "reward"


def test_boundary_probabilities_are_accepted() -> None:
    fb = BanditFeedback(
        reward=[0.0, 1.0],
        logged_probability=[1.0, 1e-9],
        target_probability=[0.0, 1.0],
    )

    assert fb.weights[1] == pytest.approx(1e9)


def test_dr_without_reward_model_names_the_missing_field() -> None:
    fb = BanditFeedback(**{**_valid(), "dm_logged": None})

    with pytest.raises(InvalidFeedback) as err:
        DR().estimate(fb)

    assert err.value.field == "dm_logged"
