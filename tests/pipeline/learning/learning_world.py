"""A seeded personalization world with a known best policy, logged the way the service logs.

Ten user segments, five actions; action `segment % 5` pays with probability HIGH, every other
action with LOW, so the best policy earns HIGH and uniform earns (HIGH + 4 LOW) / 5. Decisions
and rewards are written as closed event-log segments (the service's byte layout, through
cbloop.encoding), so the real ingest and join turn them into the joined exports training and
evaluation read.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt

from cbloop.clock import format_ts
from cbloop.encoding import build_vw_context, decision_line, encode_context, outcome_line
from cbloop.eventlog.layout import segment_key
from cbloop.sampling import split_draw

SEGMENTS = 10
ACTIONS = tuple(f"a{j}" for j in range(5))
HIGH = 0.8
LOW = 0.2
UNIFORM_VALUE = (HIGH + (len(ACTIONS) - 1) * LOW) / len(ACTIONS)

FloatArray = npt.NDArray[np.float64]
#: segment -> logging pmf over ACTIONS
Policy = Callable[[int], Sequence[float]]


def best_action(segment: int) -> int:
    return segment % len(ACTIONS)


def expected_reward(segment: int, action: int) -> float:
    return HIGH if action == best_action(segment) else LOW


def uniform(segment: int) -> Sequence[float]:
    del segment
    return [1.0 / len(ACTIONS)] * len(ACTIONS)


def skewed(segment: int) -> Sequence[float]:
    """A poor logging policy: mostly the action after the best one."""
    pmf = [0.1] * len(ACTIONS)
    pmf[(best_action(segment) + 1) % len(ACTIONS)] = 0.6
    return pmf


def context(segment: int, rng: random.Random) -> dict[str, dict[str, str | float]]:
    return {"user": {"seg": f"s{segment}", "noise": round(rng.random(), 3)}}


def actions() -> list[tuple[str, dict[str, dict[str, str | float | int | bool]]]]:
    return [(a, {"item": {"kind": f"k{j}"}}) for j, a in enumerate(ACTIONS)]


@dataclass(frozen=True)
class LoggedBatch:
    event_ids: list[str]
    segments: list[int]


def write_events(
    root: Path,
    n: int,
    *,
    seed: int,
    policy: Policy = uniform,
    experiment: str = "default",
    model_id: str = "logger",
    ago: timedelta = timedelta(minutes=30),
) -> LoggedBatch:
    """Log `n` decisions of `policy` and their rewards as closed segments under `root`."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - ago
    decisions: list[bytes] = []
    outcomes: list[bytes] = []
    ids: list[str] = []
    segments: list[int] = []
    for i in range(n):
        segment = rng.randrange(SEGMENTS)
        pmf = list(policy(segment))
        chosen = rng.choices(range(len(ACTIONS)), weights=pmf)[0]
        event_id = f"s{seed}-e{i:06d}"
        moment = start + timedelta(milliseconds=10 * i)
        c = build_vw_context(context(segment, rng), actions())
        order = [chosen, *(j for j in range(len(ACTIONS)) if j != chosen)]
        decisions.append(
            decision_line(
                event_id=event_id,
                ts=format_ts(moment),
                order=order,
                probabilities=pmf,
                c_json=encode_context(c),
                experiment=experiment,
                model_id=model_id,
                action_ids=ACTIONS,
                sample_prob=split_draw(event_id),
                deferred=False,
            )
        )
        if rng.random() < expected_reward(segment, chosen):
            outcomes.append(
                outcome_line(
                    event_id=event_id,
                    ts=format_ts(moment + timedelta(seconds=1)),
                    kind="reward",
                    value=1.0,
                )
            )
        ids.append(event_id)
        segments.append(segment)
    opened = start.timestamp()
    for kind, lines in (("decisions", decisions), ("outcomes", outcomes)):
        path = root / segment_key(kind, opened, f"test{seed}", 1)  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(lines))
    return LoggedBatch(ids, segments)


def true_value(pmf_by_event: Sequence[FloatArray], segments: Sequence[int]) -> float:
    """Exact expected reward of a policy given its pmf on each event's context."""
    total = 0.0
    for pmf, segment in zip(pmf_by_event, segments, strict=True):
        total += sum(p * expected_reward(segment, a) for a, p in enumerate(pmf))
    return total / len(segments)
