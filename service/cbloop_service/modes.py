"""Learning modes and the control holdout: which pmf a decision is drawn from.

`online` experiments without a holdout never come here (ranking checks that with one branch
and scores with VW). Everything else is served from a fixed pmf whose probabilities are
exact, so the logged propensities are the true ones and off-policy evaluation stays valid:

- `logging_only`: probability 1 on the baseline (the app's own choice); users see exactly
  what they would without cbloop. No holdout applies: all of this traffic is the control.
- `apprentice`: the baseline with probability 1 - epsilon, plus epsilon spread uniformly
  over every eligible action (the baseline included), i.e. p(baseline) = 1 - epsilon +
  epsilon / K and epsilon / K for each other action.
- holdout (`online` or `apprentice`, for units whose stable hash falls below
  `holdout.share`): uniform 1 / K, or probability 1 on the baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cbloop.errors import InvalidInput
from cbloop.sampling import holdout_draw
from cbloop.settings import ExperimentSettings
from cbloop_service.errors import ServiceError


class InvalidBaselineAction(ServiceError, InvalidInput):
    status_code = 422
    code = "invalid_baseline_action"

    def __init__(self, message: str) -> None:
        super().__init__(message, field="baseline_action")


@dataclass(frozen=True, slots=True)
class Assignment:
    """How one decision is served when the bandit does not decide alone."""

    mode: str
    holdout: bool
    #: The pmf over the eligible actions to draw from; None: the bandit's (VW's) pmf.
    pmf: list[float] | None


def baseline_index(
    baseline_action: str | None, action_ids: Sequence[str], excluded: set[str]
) -> int:
    """The baseline's position among the eligible actions (default: the first one)."""
    if baseline_action is None:
        return 0
    if baseline_action in excluded:
        raise InvalidBaselineAction(f"{baseline_action!r} is in excluded_actions")
    try:
        return action_ids.index(baseline_action)
    except ValueError:
        raise InvalidBaselineAction(f"{baseline_action!r} is not one of the actions") from None


def one_hot(n: int, index: int) -> list[float]:
    pmf = [0.0] * n
    pmf[index] = 1.0
    return pmf


def uniform(n: int) -> list[float]:
    return [1.0 / n] * n


def apprentice_pmf(n: int, baseline: int, epsilon: float) -> list[float]:
    """epsilon / n everywhere plus 1 - epsilon on the baseline, summing to 1 in float64."""
    if epsilon <= 0.0:
        return one_hot(n, baseline)
    share = epsilon / n
    pmf = [share] * n
    # The baseline takes what the others leave, so the vector sums to 1 as exactly as floats
    # allow and the logged p of the baseline is the one the draw used.
    pmf[baseline] = 1.0 - share * (n - 1)
    return pmf


def in_holdout(experiment: str, unit_id: str, share: float) -> bool:
    return share > 0.0 and holdout_draw(experiment, unit_id) < share


def assign(
    experiment: str,
    settings: ExperimentSettings,
    *,
    unit_id: str,
    n_actions: int,
    baseline: int,
) -> Assignment:
    """The mode, holdout flag and fixed pmf of a decision (not for plain online traffic)."""
    mode = settings.mode
    if mode == "logging_only":
        return Assignment(mode, False, one_hot(n_actions, baseline))
    holdout = settings.holdout
    if in_holdout(experiment, unit_id, holdout.share):
        pmf = uniform(n_actions) if holdout.policy == "uniform" else one_hot(n_actions, baseline)
        return Assignment(mode, True, pmf)
    if mode == "apprentice":
        return Assignment(
            mode, False, apprentice_pmf(n_actions, baseline, settings.apprentice.epsilon)
        )
    return Assignment(mode, False, None)
