"""Turning VW's pmf into a choice that is reproducible from the event id.

The probability we log must be exactly the one the draw used, so the float32 pmf from VW
is renormalized in float64 once and that same vector is both sampled from and logged.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from cbloop.errors import InvalidInput

_SCALE = float(1 << 53)


class InvalidPmf(InvalidInput, ValueError):
    """The policy returned something that is not a probability distribution."""


def normalize_pmf(raw: Sequence[float], n_actions: int) -> list[float]:
    if len(raw) != n_actions:
        raise InvalidPmf(f"pmf has {len(raw)} entries for {n_actions} actions")
    total = 0.0
    for x in raw:
        if not math.isfinite(x) or x < 0:
            raise InvalidPmf(f"pmf has an invalid entry {x!r}")
        total += x
    if total <= 0:
        raise InvalidPmf("pmf sums to zero")
    return [float(x) / total for x in raw]


def seeded_uniform(event_id: str, purpose: str) -> float:
    """A uniform draw in [0, 1) determined by the event id; `purpose` keeps draws independent."""
    digest = hashlib.sha256(f"{purpose}\x00{event_id}".encode()).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / _SCALE


def sample_index(pmf: Sequence[float], u: float) -> int:
    """Inverse-CDF sampling; never returns an action with zero probability."""
    acc = 0.0
    last_positive = 0
    for i, p in enumerate(pmf):
        if p <= 0:
            continue
        last_positive = i
        acc += p
        if u < acc:
            return i
    return last_positive


def choose(event_id: str, pmf: Sequence[float]) -> int:
    return sample_index(pmf, seeded_uniform(event_id, "choice"))


def split_draw(event_id: str) -> float:
    """`sample_prob`: fixes the train/eval split; the same event id always lands the same side."""
    return seeded_uniform(event_id, "split")


def holdout_draw(experiment: str, unit_id: str) -> float:
    """Uniform in [0, 1) fixed by (experiment, unit): a unit is held out when this is below
    `holdout.share`, so the same unit is always in or always out (and raising the share only
    adds units to the holdout). Its own salt keeps it independent of the choice and split
    draws, and the experiment in the key keeps one user's groups independent across
    experiments."""
    return seeded_uniform(f"{experiment}\x00{unit_id}", "holdout")


def ranking_order(pmf: Sequence[float], chosen: int) -> list[int]:
    """Chosen action first, then the others by decreasing probability (ties by position)."""
    # Python's sort is stable, reverse=True included: equal probabilities keep their order.
    rest = sorted(range(len(pmf)), key=pmf.__getitem__, reverse=True)
    rest.remove(chosen)
    return [chosen, *rest]
