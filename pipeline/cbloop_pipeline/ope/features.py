"""One read of a joined DSJSON file: the logged fields, categorical features, who logged it.

The reward model (pipeline.ope.reward_model) needs features it cannot be blown up by, so every
feature becomes a categorical token with value 1:
  * strings and booleans: `path=value`;
  * numbers: `path#bin`, bin = sign(x) * floor(2 * log1p(|x|)), i.e. sign(x) log1p(|x|) cut
    into half-unit bins. A counter from 0 to 3000 spans 17 bins, and 1e12 is bin 55: a token
    like any other, whose weight is learned (or, if unseen in training, is zero) instead of a
    coefficient multiplied by 1e12.
Shared features are everything in "c" except `_multi` (and keys starting with "_"); an
action's features are its `_multi` entry. Tokens are numbered in order of first appearance
(a vocabulary, not a hash, so nothing collides), and each distinct action (same feature
tokens) gets an action key, which the model crosses with the shared tokens.

This reader also validates the logged fields exactly as `read_logged_events` does (it uses the
same parser), so the events here and the lines VW reads are the same events.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from cbloop_pipeline.ope.logged import (
    IntArray,
    LoggedEvents,
    ObjectArray,
    load_line,
    parse_logged,
)

logger = logging.getLogger(__name__)

#: Nesting below this depth is flattened into one token (deeper structure is rare and cheap
#: to ignore; an unbounded walk would let a pathological line cost arbitrary time).
_MAX_DEPTH = 3
_SCALARS = frozenset({str, int, float, bool})


@dataclass(frozen=True, eq=False)
class EventFeatures:
    """Categorical features of every event and action of a file, as integer ids.

    Attributes:
        shared_offsets: event i's shared tokens are shared[shared_offsets[i]:...[i + 1]].
        shared: shared-token ids (0 .. n_shared - 1).
        action_key: per flat action (aligned with LoggedEvents.offsets), its action key.
        key_tokens_offsets, key_tokens: action key k's tokens are
            key_tokens[key_tokens_offsets[k]:key_tokens_offsets[k + 1]] (ids 0 .. n_action - 1).
        n_shared, n_action, n_keys: vocabulary sizes.
    """

    shared_offsets: IntArray
    shared: IntArray
    action_key: IntArray
    key_tokens_offsets: IntArray
    key_tokens: IntArray
    n_shared: int
    n_action: int
    n_keys: int


def _number_token(path: str, x: float) -> str:
    if not math.isfinite(x):
        return f"{path}#nonfinite"
    b = math.floor(2.0 * math.log1p(abs(x)))
    return f"{path}#{-b if x < 0 else b}"


def tokens(value: Any, path: str, depth: int = 0) -> Iterator[str]:
    """Categorical tokens of one JSON value at `path` (see the module docstring)."""
    if isinstance(value, bool):
        yield f"{path}={value}"
    elif isinstance(value, int | float):
        yield _number_token(path, float(value))
    elif isinstance(value, str):
        yield f"{path}={value}"
    elif isinstance(value, dict) and depth < _MAX_DEPTH:
        for k, v in value.items():
            yield from tokens(v, f"{path}.{k}" if path else str(k), depth + 1)
    elif isinstance(value, list) and depth < _MAX_DEPTH:
        for j, v in enumerate(value):
            yield from tokens(v, f"{path}[{j}]", depth + 1)
    elif value is not None:
        yield f"{path}={value!r}"


class _Vocabulary:
    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def id(self, token: str) -> int:
        found = self.ids.get(token)
        if found is None:
            found = self.ids[token] = len(self.ids)
        return found


def read_events_and_features(path: Path) -> tuple[LoggedEvents, EventFeatures, ObjectArray]:
    """Logged events, their features and each event's logging model id (None if absent)."""
    ids: list[str] = []
    rewards: list[float] = []
    probs: list[float] = []
    actions: list[int] = []
    counts: list[int] = []
    loggers: list[object] = []
    shared_vocab, action_vocab = _Vocabulary(), _Vocabulary()
    # Actions usually repeat verbatim across events; their key is looked up by their tokens.
    keys: dict[tuple[int, ...], int] = {}
    # ... and first by their serialised form, which is far cheaper than tokenizing again.
    seen: dict[bytes, int] = {}
    scalar_ids: dict[tuple[str, str, type, object], int] = {}
    shared_counts: list[int] = []
    shared: list[int] = []
    action_key: list[int] = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            obj = load_line(raw, path, line_no)
            eid, reward, prob, action, k = parse_logged(obj, path, line_no)
            ids.append(eid)
            rewards.append(reward)
            probs.append(prob)
            actions.append(action)
            counts.append(k)
            model_id = obj.get("model_id")
            loggers.append(model_id if isinstance(model_id, str) else None)
            c = obj["c"]
            before = len(shared)
            for name, value in c.items():
                if name.startswith("_"):
                    continue
                if isinstance(value, dict):
                    for k, v in value.items():
                        # Fast path: a scalar's token id by (namespace, key, type, value);
                        # the type keeps True apart from 1 (equal, same hash).
                        if v.__class__ in _SCALARS:
                            ck = (name, k, v.__class__, v)
                            tid = scalar_ids.get(ck)
                            if tid is None:
                                (token,) = tokens(v, f"{name}.{k}")
                                tid = scalar_ids[ck] = shared_vocab.id(token)
                            shared.append(tid)
                        else:
                            shared.extend(shared_vocab.id(t) for t in tokens(v, f"{name}.{k}", 1))
                else:
                    shared.extend(shared_vocab.id(t) for t in tokens(value, name))
            shared_counts.append(len(shared) - before)
            for act in c["_multi"]:
                blob = orjson.dumps(act)
                key = seen.get(blob)
                if key is None:
                    toks = tuple(action_vocab.id(t) for t in tokens(act, ""))
                    key = keys.get(toks)
                    if key is None:
                        key = keys[toks] = len(keys)
                    seen[blob] = key
                action_key.append(key)
    event_id = np.empty(len(ids), dtype=object)
    event_id[:] = ids
    logged_by = np.empty(len(ids), dtype=object)
    logged_by[:] = loggers
    logged = LoggedEvents(
        event_id=event_id,
        reward=np.asarray(rewards, dtype=np.float64),
        logged_probability=np.asarray(probs, dtype=np.float64),
        logged_action=np.asarray(actions, dtype=np.int64),
        n_actions=np.asarray(counts, dtype=np.int64),
    )
    key_list = sorted(keys.items(), key=lambda kv: kv[1])
    key_sizes = np.fromiter((len(t) for t, _ in key_list), dtype=np.int64, count=len(key_list))
    key_offsets = np.zeros(len(key_list) + 1, dtype=np.int64)
    np.cumsum(key_sizes, out=key_offsets[1:])
    key_tokens = np.fromiter(
        (t for toks, _ in key_list for t in toks), dtype=np.int64, count=int(key_offsets[-1])
    )
    shared_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.asarray(shared_counts, dtype=np.int64), out=shared_offsets[1:])
    features = EventFeatures(
        shared_offsets=shared_offsets,
        shared=np.asarray(shared, dtype=np.int64),
        action_key=np.asarray(action_key, dtype=np.int64),
        key_tokens_offsets=key_offsets,
        key_tokens=key_tokens,
        n_shared=len(shared_vocab.ids),
        n_action=len(action_vocab.ids),
        n_keys=len(keys),
    )
    logger.debug(
        "read %d events from %s: %d shared tokens, %d action tokens, %d distinct actions",
        logged.n,
        path,
        features.n_shared,
        features.n_action,
        features.n_keys,
    )
    return logged, features, logged_by
