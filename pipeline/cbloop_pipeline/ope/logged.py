"""Reading the logged side of joined DSJSON: event id, reward, propensity, chosen action.

The file is also read by VW itself (scoring, reward model), and VW silently skips blank lines
and lines it cannot parse, so this reader is strict: anything VW might skip or misread is an
error here, which keeps the i-th event of this reader and the i-th prediction of VW the same
event. That includes the label placement: labels must precede "c", and `_labelIndex` must be
`_label_Action - 1`, because VW attaches the cost to `_multi[_labelIndex]`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from cbloop.errors import InvalidInput

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
ObjectArray = npt.NDArray[np.object_]

_LABEL_KEYS = ("_label_cost", "_label_probability", "_label_Action", "_labelIndex")


class InvalidLoggedEvent(InvalidInput, ValueError):
    """A joined DSJSON line that cannot be evaluated; names file, line and field."""

    def __init__(self, path: Path, line: int, field: str, message: str) -> None:
        super().__init__(f"{path}:{line}: {field}: {message}")
        self.path = path
        self.line = line
        self.field = field


@dataclass(frozen=True, eq=False)
class LoggedEvents:
    """The logged fields of a joined DSJSON file, one entry per non-blank line, in file order.

    Attributes:
        event_id: EventId strings (object array).
        reward: -_label_cost.
        logged_probability: _label_probability.
        logged_action: _label_Action - 1 (0-based index into `_multi`).
        n_actions: number of `_multi` actions of each event.
    """

    event_id: ObjectArray
    reward: FloatArray
    logged_probability: FloatArray
    logged_action: IntArray
    n_actions: IntArray

    @property
    def n(self) -> int:
        return int(self.reward.shape[0])

    @property
    def offsets(self) -> IntArray:
        """Start of each event's actions in a flat per-action array; length n + 1."""
        out = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(self.n_actions, out=out[1:])
        return out


def _number(obj: dict[str, object], key: str, path: Path, line: int) -> float:
    value = obj.get(key)
    # bool is an int subclass; a JSON true is not a cost or a probability.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidLoggedEvent(path, line, key, f"must be a number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise InvalidLoggedEvent(path, line, key, f"must be finite, got {value!r}")
    return out


def load_line(raw: bytes, path: Path, line: int) -> dict[str, Any]:
    """The line as a JSON object; `InvalidLoggedEvent` if it is not one."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidLoggedEvent(path, line, "line", f"not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidLoggedEvent(path, line, "line", "not a JSON object")
    return obj


def _parse_line(raw: bytes, path: Path, line: int) -> tuple[str, float, float, int, int]:
    return parse_logged(load_line(raw, path, line), path, line)


def parse_logged(obj: dict[str, Any], path: Path, line: int) -> tuple[str, float, float, int, int]:
    """(event id, reward, logged probability, 0-based logged action, number of actions)."""

    # VW's streaming DSJSON parser ignores labels that come after "c"; the reward model
    # would then learn nothing without any error, so the key order is part of validity.
    keys = list(obj)
    if "c" not in obj:
        raise InvalidLoggedEvent(path, line, "c", "missing")
    c_pos = keys.index("c")
    for key in _LABEL_KEYS:
        if key not in obj:
            raise InvalidLoggedEvent(path, line, key, "missing (not a joined line?)")
        if keys.index(key) > c_pos:
            raise InvalidLoggedEvent(path, line, key, 'must come before "c" in the line')

    event_id = obj.get("EventId")
    if not isinstance(event_id, str) or not event_id:
        raise InvalidLoggedEvent(
            path, line, "EventId", f"must be a non-empty string, got {event_id!r}"
        )
    cost = _number(obj, "_label_cost", path, line)
    prob = _number(obj, "_label_probability", path, line)
    if not 0.0 < prob <= 1.0:
        raise InvalidLoggedEvent(
            path, line, "_label_probability", f"must be in (0, 1], got {prob!r}"
        )

    c = obj["c"]
    multi = c.get("_multi") if isinstance(c, dict) else None
    if not isinstance(multi, list) or not multi:
        raise InvalidLoggedEvent(path, line, "c._multi", "must be a non-empty list of actions")
    action = obj["_label_Action"]
    if isinstance(action, bool) or not isinstance(action, int) or not 1 <= action <= len(multi):
        raise InvalidLoggedEvent(
            path, line, "_label_Action", f"must be an integer in [1, {len(multi)}], got {action!r}"
        )
    # VW's DSJSON parser attaches the cost to _multi[_labelIndex] and ignores _label_Action
    # for that purpose; any other index trains every VW learner (policy and reward model) on
    # the wrong action's features without an error.
    index = obj["_labelIndex"]
    if isinstance(index, bool) or not isinstance(index, int) or index != action - 1:
        raise InvalidLoggedEvent(
            path,
            line,
            "_labelIndex",
            f"is {index!r} but _label_Action is {action}: VW puts the label on "
            "_multi[_labelIndex], so it must be _label_Action - 1",
        )
    # -cost + 0.0 turns a logged cost of 0.0 into reward 0.0 rather than -0.0.
    return event_id, -cost + 0.0, prob, action - 1, len(multi)


def read_logged_events(path: Path) -> LoggedEvents:
    """Read every non-blank line of a joined DSJSON file (labels first, see spec)."""
    ids: list[str] = []
    rewards: list[float] = []
    probs: list[float] = []
    actions: list[int] = []
    counts: list[int] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            eid, reward, prob, action, k = _parse_line(raw, path, line_no)
            ids.append(eid)
            rewards.append(reward)
            probs.append(prob)
            actions.append(action)
            counts.append(k)
    event_id = np.empty(len(ids), dtype=object)
    event_id[:] = ids
    logger.debug("read %d logged events from %s", len(ids), path)
    return LoggedEvents(
        event_id=event_id,
        reward=np.asarray(rewards, dtype=np.float64),
        logged_probability=np.asarray(probs, dtype=np.float64),
        logged_action=np.asarray(actions, dtype=np.int64),
        n_actions=np.asarray(counts, dtype=np.int64),
    )
