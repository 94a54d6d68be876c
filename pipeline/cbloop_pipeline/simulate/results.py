"""What a simulation measured: per interaction, per loop, and the run's totals."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Interaction:
    """One rank + reward through the service, with the online learner's move on the same row."""

    loop: int
    t: int
    event_id: str
    model_id: str
    action_id: str
    probability: float
    reward: float
    expected_reward: float
    oracle_reward: float
    uniform_reward: float
    best_fixed_reward: float
    online_action_id: str
    online_probability: float
    online_reward: float


@dataclass(frozen=True)
class OpeEstimate:
    """An off-policy estimate of a model's mean reward, as its evaluation recorded it."""

    estimator: str
    value: float
    ci_low: float | None
    ci_high: float | None
    events: int | None = None
    evaluated_on: str | None = None
    confidence: float = 0.95

    def covers(self, realized: float) -> bool | None:
        """Does the interval contain the realized mean reward (the literal check)?"""
        if self.ci_low is None or self.ci_high is None:
            return None
        return self.ci_low <= realized <= self.ci_high

    def prediction_interval(self, reward_sd: float, n: int) -> tuple[float, float] | None:
        """Where the mean of `n` future rewards should fall, at the same confidence.

        The confidence interval is about the policy's expected reward; a round's realized
        mean adds its own sampling noise (sd / sqrt(n)), which the interval leaves out.
        Once the estimate rests on more events than a round has, that noise is the larger
        of the two, so the realized mean can fall outside a perfectly calibrated interval
        more often than not. This interval adds both variances.
        """
        if self.ci_low is None or self.ci_high is None or n < 1:
            return None
        z = NormalDist().inv_cdf(0.5 + self.confidence / 2)
        se = (self.ci_high - self.ci_low) / (2 * z)
        half = z * math.sqrt(se**2 + reward_sd**2 / n)
        return self.value - half, self.value + half


@dataclass
class LoopRecord:
    """One round: served by `model_id`, then the pipeline cycle that followed it."""

    loop: int
    interactions: int
    model_id: str
    mean_reward: float
    online_vw: float
    uniform: float
    best_fixed: float
    oracle: float
    ope: OpeEstimate | None = None
    covered: bool | None = None
    prediction_interval: tuple[float, float] | None = None
    consistent: bool | None = None
    deployed_after: str | None = None
    pipeline: dict[str, Any] = field(default_factory=dict)
    other_models: list[str] = field(default_factory=list)
    play_seconds: float = 0.0
    pipeline_seconds: float = 0.0
    swap_seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ope"] = asdict(self.ope) if self.ope is not None else None
        return out


@dataclass(frozen=True)
class Totals:
    interactions: int
    system_mean_reward: float
    last_loops: int
    last_loops_mean_reward: float
    online_vw_mean_reward: float
    system_vs_online: float | None
    uniform: float
    best_fixed: float
    best_action: str
    oracle: float
    ope_loops: int
    ope_covered: int
    ope_coverage: float | None
    ope_consistent: int
    ope_consistency: float | None


def totals(
    loops: list[LoopRecord], interactions: list[Interaction], best_action: str, last: int = 5
) -> Totals:
    def mean(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    tail = [i for i in interactions if i.loop > len(loops) - last]
    system = mean([i.reward for i in interactions])
    online = mean([i.online_reward for i in interactions])
    judged = [r.covered for r in loops if r.covered is not None]
    covered = sum(1 for c in judged if c)
    checked = [r.consistent for r in loops if r.consistent is not None]
    consistent = sum(1 for c in checked if c)
    return Totals(
        interactions=len(interactions),
        system_mean_reward=system,
        last_loops=min(last, len(loops)),
        last_loops_mean_reward=mean([i.reward for i in tail]),
        online_vw_mean_reward=online,
        system_vs_online=system / online if online > 0 else None,
        uniform=mean([i.uniform_reward for i in interactions]),
        best_fixed=mean([i.best_fixed_reward for i in interactions]),
        best_action=best_action,
        oracle=mean([i.oracle_reward for i in interactions]),
        ope_loops=len(judged),
        ope_covered=covered,
        ope_coverage=covered / len(judged) if judged else None,
        ope_consistent=consistent,
        ope_consistency=consistent / len(checked) if checked else None,
    )
