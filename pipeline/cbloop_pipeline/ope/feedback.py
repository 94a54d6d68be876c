"""Logged bandit feedback, checked once, in the shape every estimator consumes.

One entry per logged event. Validation lives here rather than in each estimator so that a
bad array (a NaN reward, a zero propensity) is reported once, naming the field, before any
number is produced from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cbloop.errors import InvalidInput

FloatArray = npt.NDArray[np.float64]


class InvalidFeedback(InvalidInput, ValueError):
    """Bandit feedback that estimators must not use; `field` names the offending array."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _as_float_vector(field: str, values: object) -> FloatArray:
    try:
        arr = np.array(values, dtype=np.float64, copy=True)
    except (TypeError, ValueError) as exc:
        raise InvalidFeedback(field, f"not convertible to float: {exc}") from exc
    if arr.ndim != 1:
        raise InvalidFeedback(field, f"must be one-dimensional, got shape {arr.shape}")
    # A frozen dataclass only freezes the attribute binding; locking the buffer keeps an
    # estimate computed earlier consistent with the feedback object it came from.
    arr.setflags(write=False)
    return arr


def _first_bad(mask: npt.NDArray[np.bool_]) -> int:
    return int(np.flatnonzero(mask)[0])


@dataclass(frozen=True, eq=False)
class BanditFeedback:
    """Per-event arrays of one logged data set, evaluated for one target policy.

    Attributes:
        reward: observed reward of the logged action.
        logged_probability: probability the logging policy gave the logged action, in (0, 1].
        target_probability: probability the target policy gives the logged action, in [0, 1].
        dm_logged: reward model's estimate for the logged action (optional; DR needs it).
        dm_policy: reward model's expectation under the target pmf,
            sum_a pi(a|x) * r_hat(x, a) (optional; DR needs it).

    Arrays are copied to read-only float64 vectors. Invalid input raises `InvalidFeedback`
    naming the field.
    """

    reward: FloatArray
    logged_probability: FloatArray
    target_probability: FloatArray
    dm_logged: FloatArray | None = None
    dm_policy: FloatArray | None = None

    def __post_init__(self) -> None:
        fields: dict[str, object] = {
            "reward": self.reward,
            "logged_probability": self.logged_probability,
            "target_probability": self.target_probability,
            "dm_logged": self.dm_logged,
            "dm_policy": self.dm_policy,
        }
        n: int | None = None
        for name, value in fields.items():
            if value is None:
                continue
            arr = _as_float_vector(name, value)
            if n is None:
                n = arr.shape[0]
                if n == 0:
                    raise InvalidFeedback(name, "no events (empty array)")
            elif arr.shape[0] != n:
                raise InvalidFeedback(name, f"has {arr.shape[0]} entries but reward has {n}")
            finite = np.isfinite(arr)
            if not finite.all():
                i = _first_bad(~finite)
                raise InvalidFeedback(name, f"non-finite value {arr[i]!r} at index {i}")
            object.__setattr__(self, name, arr)

        lp = self.logged_probability
        bad = (lp <= 0.0) | (lp > 1.0)
        if bad.any():
            i = _first_bad(bad)
            raise InvalidFeedback(
                "logged_probability", f"must be in (0, 1], got {lp[i]!r} at index {i}"
            )
        tp = self.target_probability
        bad = (tp < 0.0) | (tp > 1.0)
        if bad.any():
            i = _first_bad(bad)
            raise InvalidFeedback(
                "target_probability", f"must be in [0, 1], got {tp[i]!r} at index {i}"
            )

    @property
    def n(self) -> int:
        return int(self.reward.shape[0])

    @property
    def weights(self) -> FloatArray:
        """Importance weights pi(a_i|x_i) / mu(a_i|x_i) of the logged actions."""
        return self.target_probability / self.logged_probability

    @property
    def has_reward_model(self) -> bool:
        return self.dm_logged is not None and self.dm_policy is not None
