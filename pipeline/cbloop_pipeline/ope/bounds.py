"""The reward range estimates and intervals are clipped to.

A policy's value is an average reward, so it lies in the reward range; an interval reaching
below 0 for a click rate says nothing the range does not already say, and clipping a point
estimate to a convex set that holds the truth can only bring it closer (so it never raises
the RMSE). With 0/1 rewards the range is [0, 1]; otherwise the observed [min, max] is used
unless the caller knows the range.
"""

from __future__ import annotations

import math

import numpy as np

from cbloop_pipeline.ope.feedback import FloatArray

Bounds = tuple[float, float]


def is_binary(reward: FloatArray) -> bool:
    """True when every reward is exactly 0 or 1 (so rewards are treated as Bernoulli)."""
    return bool(np.all((reward == 0.0) | (reward == 1.0)))


def reward_range(reward: FloatArray) -> Bounds:
    """(0, 1) for 0/1 rewards (or none), else the observed (min, max)."""
    if reward.shape[0] == 0 or is_binary(reward):
        return 0.0, 1.0
    return float(reward.min()), float(reward.max())


def clip(value: float, bounds: Bounds) -> float:
    """`value` clipped to `bounds`; NaN stays NaN."""
    if math.isnan(value):
        return value
    return min(max(value, bounds[0]), bounds[1])
