"""Personalizer / learning-loop DSJSON history -> cbloop's event log, for ingest to load.

Each joined interaction line becomes one cbloop decision line (its `EventId`, `Timestamp`,
`a` order and `p` propensities kept as logged) and its outcomes (rewards, activation). The
lines are written as closed segments in the event-log layout
(`events/{decisions,outcomes}/date=.../hour=.../import-<file digest>-<seq>.jsonl`), so the
ordinary ingest loads them with the same contract checks, quarantine and exactly-once
bookkeeping as online traffic, and the join, warm start, OPE and the dashboard read them as
they read everything else. Why segments rather than rows: the warehouse keeps pointers into
segment files (the export copies decision bytes from them), so only segments give imported
decisions a line the export can copy; and a rebuilt warehouse replays them like the rest.

Idempotent: segment keys are a function of the file's SHA-256, and a manifest per digest
(`imports/<experiment>/<digest>/manifest.json`) marks the file done; importing it again
writes nothing. Lines that do not parse or break the format are not guessed at: they are
counted and written with their line numbers and reasons to
`imports/<experiment>/<digest>/quarantine.jsonl`.

What a line may hold (VW's DSJSON as Personalizer's joiner wrote it):
* `EventId` (string), `Timestamp` (ISO 8601), `a` (1-based action positions in `_multi`,
  the chosen first), `p` (their probabilities, aligned with `a`), `c` (shared features and
  `_multi`, one object per action), `VWState.m` (the model id, kept).
* Label `_label_cost` (= -reward), `_label_probability`, `_label_Action`, `_labelIndex`:
  when present they must agree with `a[0]`/`p[0]`; the cost is the reward when `o` holds none.
* `o` or `_outcomes`: observations; `{"v": number}` is a reward (several are aggregated by
  the experiment's `reward.aggregation` at the join), `{"ActionTaken": true}` an activation.
* `_skipLearn: true`: a deferred event never activated (logged, never learned from); an
  event whose observations hold an activation is deferred and activated.
* A line with `pdrop` and no `c` (the joiner's drop summary) is skipped and counted.
Features are re-encoded with cbloop's mapping (`cbloop.personalizer_features`), the same
as the Personalizer rank route's, so history and new traffic share features. The action id
of a `_multi` entry is its `_tag`, else its `_id`, else its 1-based position.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from cbloop.clock import format_ts
from cbloop.encoding import ACTION_NS, build_vw_context, decision_line, encode_context, outcome_line
from cbloop.errors import InvalidInput
from cbloop.eventlog.layout import Kind, kind_prefix, partition
from cbloop.personalizer_features import FeatureMappingError, Namespaces, to_namespaces
from cbloop.sampling import split_draw
from cbloop.storage import ObjectNotFound, ObjectStore

#: Same bounds as the HTTP API's (numbers VW's float32 keeps meaningful).
MAX_FEATURE_MAGNITUDE = 1e6
MAX_EVENT_ID_LENGTH = 256
IMPORTED_MODEL_ID = "personalizer-import"
LINES_PER_SEGMENT = 100_000
_EVENT_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-")
_PMF_TOLERANCE = 1e-3


class BadLine(InvalidInput):
    """A DSJSON line that is not an importable interaction; the message says why."""


@dataclass
class ImportResult:
    path: str
    digest: str
    already_imported: bool = False
    lines: int = 0
    decisions: int = 0
    rewards: int = 0
    activations: int = 0
    skipped_pdrop: int = 0
    duplicates: int = 0
    quarantined: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    reasons: list[tuple[int, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "digest": self.digest,
            "already_imported": self.already_imported,
            "lines": self.lines,
            "decisions": self.decisions,
            "rewards": self.rewards,
            "activations": self.activations,
            "skipped_pdrop": self.skipped_pdrop,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
        }


@dataclass(frozen=True)
class Interaction:
    event_id: str
    ts: str
    decision: bytes
    outcomes: tuple[bytes, ...]
    rewards: int
    activated: bool


def manifest_key(experiment: str, digest: str) -> str:
    return f"imports/{experiment}/{digest}/manifest.json"


def quarantine_key(experiment: str, digest: str) -> str:
    return f"imports/{experiment}/{digest}/quarantine.jsonl"


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_file(store: ObjectStore, experiment: str, path: Path) -> ImportResult:
    """Import one DSJSON file into `experiment`'s event log (nothing if already imported)."""
    digest = file_digest(path)
    result = ImportResult(path=str(path), digest=digest)
    try:
        previous = orjson.loads(store.get_bytes(manifest_key(experiment, digest)))
    except ObjectNotFound:
        previous = None
    if previous is not None:
        result.already_imported = True
        for name in ("lines", "decisions", "rewards", "activations", "quarantined"):
            setattr(result, name, int(previous.get(name, 0)))
        return result

    seen: set[str] = set()
    decisions = _SegmentWriter(store, "decisions", digest)
    outcomes = _SegmentWriter(store, "outcomes", digest)
    quarantine: list[bytes] = []
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            result.lines += 1
            try:
                parsed = parse_line(raw, experiment)
            except BadLine as exc:
                result.quarantined += 1
                result.reasons.append((line_no, str(exc)))
                quarantine.append(
                    orjson.dumps(
                        {
                            "line": line_no,
                            "reason": str(exc),
                            "text": raw[:2000].decode("utf-8", "replace"),
                        }
                    )
                    + b"\n"
                )
                continue
            if parsed is None:
                result.skipped_pdrop += 1
                continue
            if parsed.event_id in seen:
                result.duplicates += 1
                continue
            seen.add(parsed.event_id)
            decisions.add([parsed.decision], parsed.ts)
            outcomes.add(parsed.outcomes, parsed.ts)
            result.decisions += 1
            result.rewards += parsed.rewards
            result.activations += int(parsed.activated)
            result.first_ts = min(result.first_ts or parsed.ts, parsed.ts)
            result.last_ts = max(result.last_ts or parsed.ts, parsed.ts)

    decisions.flush()
    outcomes.flush()
    if quarantine:
        store.put_bytes(quarantine_key(experiment, digest), b"".join(quarantine))
    manifest = {**result.to_json(), "experiment": experiment, "imported_at": format_ts()}
    # Last: a crash before this line leaves no manifest, and the next run rewrites the same keys.
    store.put_bytes(manifest_key(experiment, digest), orjson.dumps(manifest))
    return result


class _SegmentWriter:
    """Closed segments of one kind for one file, `LINES_PER_SEGMENT` lines each.

    A segment's key comes from the file digest, its sequence number and its first event's
    time (the date/hour partition): all functions of the file, so a re-run after a crash
    rewrites the very same keys.
    """

    def __init__(self, store: ObjectStore, kind: Kind, digest: str) -> None:
        self.store = store
        self.kind = kind
        self.digest = digest
        self.lines: list[bytes] = []
        self.first_ts: str | None = None
        self.seq = 0

    def add(self, lines: Iterable[bytes], ts: str) -> None:
        for line in lines:
            if self.first_ts is None:
                self.first_ts = ts
            self.lines.append(line)
            if len(self.lines) >= LINES_PER_SEGMENT:
                self.flush()

    def flush(self) -> None:
        if not self.lines or self.first_ts is None:
            return
        self.seq += 1
        moment = datetime.fromisoformat(self.first_ts.replace("Z", "+00:00")).timestamp()
        key = (
            f"{kind_prefix(self.kind)}{partition(moment)}/"
            f"import-{self.digest[:16]}-{self.seq:06d}.jsonl"
        )
        self.store.put_bytes(key, b"".join(self.lines))
        self.lines, self.first_ts = [], None


def parse_line(raw: bytes, experiment: str) -> Interaction | None:
    """One DSJSON line as cbloop lines; None for a drop summary; BadLine when it is neither."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadLine(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BadLine("not a JSON object")
    if "c" not in obj and "pdrop" in obj:
        return None
    event_id = obj.get("EventId")
    if not isinstance(event_id, str) or not event_id:
        raise BadLine("EventId must be a non-empty string")
    if len(event_id) > MAX_EVENT_ID_LENGTH or not set(event_id) <= _EVENT_ID_CHARS:
        raise BadLine("EventId must be 1-256 of A-Z a-z 0-9 . _ : -")
    ts = _timestamp(obj.get("Timestamp"))
    c = obj.get("c")
    if not isinstance(c, dict):
        raise BadLine("c must be an object")
    multi = c.get("_multi")
    if not isinstance(multi, list) or not multi or not all(isinstance(m, dict) for m in multi):
        raise BadLine("c._multi must be a non-empty list of objects")
    n = len(multi)
    order = _positions(obj.get("a"), n)
    pmf = _pmf(obj.get("p"), order, n)
    _check_label(obj, order, pmf)
    shared = _features([{k: v for k, v in c.items() if k != "_multi"}], "c")
    action_ids = [_action_id(m, i) for i, m in enumerate(multi)]
    if len(set(action_ids)) != n:
        raise BadLine("two actions of c._multi have the same id")
    actions = [
        (aid, _features([m], f"c._multi[{i}]"))
        for i, (aid, m) in enumerate(zip(action_ids, multi, strict=True))
    ]
    rewards, activated = _observations(obj)
    if not rewards and "_label_cost" in obj and not _skip_learn(obj):
        rewards = [0.0 - _finite(obj["_label_cost"], "_label_cost")]
    deferred = activated or _skip_learn(obj)
    state = obj.get("VWState")
    model_id = state.get("m") if isinstance(state, dict) else None
    c_json = encode_context(build_vw_context(shared, actions))
    decision = decision_line(
        event_id=event_id,
        ts=ts,
        order=order,
        probabilities=pmf,
        c_json=c_json,
        experiment=experiment,
        model_id=model_id if isinstance(model_id, str) and model_id else IMPORTED_MODEL_ID,
        action_ids=action_ids,
        sample_prob=split_draw(event_id),
        deferred=deferred,
    )
    outcomes = [
        outcome_line(event_id=event_id, ts=ts, kind="reward", value=value) for value in rewards
    ]
    if activated:
        outcomes.insert(0, outcome_line(event_id=event_id, ts=ts, kind="activate"))
    return Interaction(event_id, ts, decision, tuple(outcomes), len(rewards), activated)


def _timestamp(value: Any) -> str:
    if not isinstance(value, str):
        raise BadLine("Timestamp must be an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        # Personalizer wrote 7 fractional digits (.NET ticks); Python reads at most 6.
        head, dot, frac = value.rstrip("Z").partition(".")
        try:
            moment = datetime.fromisoformat(f"{head}.{frac[:6]}+00:00" if dot else f"{head}+00:00")
        except ValueError:
            raise BadLine(f"Timestamp {value!r} is not ISO 8601") from None
    if moment.tzinfo is None:
        raise BadLine(f"Timestamp {value!r} has no time zone")
    return format_ts(moment)


def _positions(value: Any, n: int) -> list[int]:
    if not isinstance(value, list) or not value:
        raise BadLine("a must be a non-empty list of action positions")
    if not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= n for x in value):
        raise BadLine(f"a must hold 1-based positions in c._multi (1..{n})")
    if len(set(value)) != len(value):
        raise BadLine("a repeats a position")
    return [x - 1 for x in value]


def _pmf(value: Any, order: list[int], n: int) -> list[float]:
    if not isinstance(value, list) or len(value) != len(order):
        raise BadLine("p must hold one probability per entry of a")
    pmf = [0.0] * n
    for index, prob in zip(order, value, strict=True):
        p = _finite(prob, "p")
        if not 0.0 <= p <= 1.0:
            raise BadLine(f"p holds {p}, outside [0, 1]")
        pmf[index] = p
    if abs(sum(pmf) - 1.0) > _PMF_TOLERANCE:
        raise BadLine(f"p sums to {sum(pmf):.6g}, not 1")
    if pmf[order[0]] <= 0.0:
        raise BadLine("the chosen action's probability is 0")
    return pmf


def _check_label(obj: Mapping[str, Any], order: list[int], pmf: list[float]) -> None:
    if "_label_Action" in obj:
        action = obj["_label_Action"]
        if action != order[0] + 1:
            raise BadLine(f"_label_Action {action!r} is not the chosen action a[0]={order[0] + 1}")
    if "_labelIndex" in obj and obj["_labelIndex"] != order[0]:
        raise BadLine(f"_labelIndex {obj['_labelIndex']!r} is not a[0]-1={order[0]}")
    if "_label_probability" in obj:
        prob = _finite(obj["_label_probability"], "_label_probability")
        if abs(prob - pmf[order[0]]) > _PMF_TOLERANCE:
            raise BadLine(f"_label_probability {prob} is not p[0]={pmf[order[0]]}")


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadLine(f"{name} must be a number")
    x = float(value)
    if not math.isfinite(x) or abs(x) > MAX_FEATURE_MAGNITUDE:
        raise BadLine(f"{name} {value!r} is not a finite number within ±1e6")
    return x


def _skip_learn(obj: Mapping[str, Any]) -> bool:
    return obj.get("_skipLearn") is True


def _observations(obj: Mapping[str, Any]) -> tuple[list[float], bool]:
    raw = obj.get("o", obj.get("_outcomes"))
    if raw is None:
        return [], False
    if not isinstance(raw, list):
        raise BadLine("o must be a list of observations")
    rewards: list[float] = []
    activated = False
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BadLine(f"o[{i}] must be an object")
        if "v" in item:
            rewards.append(_finite(item["v"], f"o[{i}].v"))
        elif item.get("ActionTaken") is True:
            activated = True
        else:
            raise BadLine(f"o[{i}] is neither a reward (v) nor an activation (ActionTaken)")
    return rewards, activated


def _action_id(entry: Mapping[str, Any], index: int) -> str:
    for key in ("_tag", "_id"):
        value = entry.get(key)
        if isinstance(value, str) and value:
            return value
    return str(index + 1)


def _features(items: list[Any], where: str) -> Namespaces:
    try:
        namespaces = to_namespaces(items, where, drop_reserved=True)
    except FeatureMappingError as exc:
        raise BadLine(str(exc)) from None
    for ns, features in namespaces.items():
        if ns == ACTION_NS or not (ns[0].isascii() and ns[0].isalnum()):
            raise BadLine(
                f"{where}.{ns}: a namespace name must start with an ASCII letter or digit "
                f"and not be {ACTION_NS}"
            )
        for name, value in features.items():
            if isinstance(value, str | bool):
                continue
            if (
                isinstance(value, int | float)
                and math.isfinite(value)
                and abs(value) <= MAX_FEATURE_MAGNITUDE
            ):
                continue
            raise BadLine(
                f"{where}.{ns}.{name}: a feature value must be a string, a boolean or a "
                "finite number within ±1e6"
            )
    return namespaces


def import_files(
    store: ObjectStore, experiment: str, paths: Iterable[Path]
) -> Iterator[ImportResult]:
    for path in paths:
        yield import_file(store, experiment, path)
