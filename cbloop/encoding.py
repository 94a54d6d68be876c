"""The one way a context and its actions become a VW example, and the log lines around it.

VW reads DSJSON through its own `--dsjson` parser both when the service scores a request
and when the pipeline trains on the log, so what is logged is exactly what was scored.
Two VW parser facts shape the byte layout here: labels must precede "c" (the parser is
streaming), and an "a" array must be present for the `_multi` actions to be read.

VW's JSON parser also loses information a client may send: it turns space, tab, `|` and
`:` in names and string values into `_`, stops a string at NUL, and names a string feature
by gluing key and value together (`{"x": "yz"}` and `{"xy": "z"}` were one feature). So
`build_vw_context` writes names and values injectively (see `vw_name`): a string feature
`"k": "v"` is logged as `"k": "=v"`, which VW reads as the feature `k=v`, and characters VW
would conflate are percent-escaped. Plain names and action ids are written unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TypeAlias

import orjson

FeatureValue: TypeAlias = str | int | float | bool
Namespaces: TypeAlias = Mapping[str, Mapping[str, FeatureValue]]

#: Reserved namespace carrying each action's id, so VW can learn per-action weights.
ACTION_NS = "ActionId"
DSJSON_VERSION = "1"


#: What VW's parser rewrites or cuts (whitespace, `|`, `:`, control characters), plus `%`
#: (the escape) and `=` (the key/value separator of string features), so escaping is
#: injective and the separator can only come from us.
_UNSAFE = re.compile(r"[%=|:\s\x00-\x1f\x7f]")
#: Prefix of every logged string feature value: VW names the feature key + value.
STRING_VALUE_PREFIX = "="


def _percent(match: re.Match[str]) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group().encode())


#: Escaped forms already computed. Feature names, namespaces, action ids and most string
#: values repeat from request to request, and a dict lookup costs a fraction of the regex
#: scan: this halved the cost of building a request's example. Cleared when full, which
#: bounds the memory a stream of unique values (user ids) can take.
_NAMES: dict[str, str] = {}
_VALUES: dict[str, str] = {}
_CACHE_LIMIT = 50_000


def vw_name(text: str) -> str:
    """`text` with every character VW would conflate percent-escaped (UTF-8 bytes, `%XX`).

    Injective, and the identity on names without such characters (the common case), so
    those stay readable in the log and in VW's audit output.
    """
    escaped = _NAMES.get(text)
    if escaped is None:
        escaped = text if _UNSAFE.search(text) is None else _UNSAFE.sub(_percent, text)
        if len(_NAMES) >= _CACHE_LIMIT:
            _NAMES.clear()
        _NAMES[text] = escaped
    return escaped


def _string_value(value: str) -> str:
    logged = _VALUES.get(value)
    if logged is None:
        logged = STRING_VALUE_PREFIX + vw_name(value)
        if len(_VALUES) >= _CACHE_LIMIT:
            _VALUES.clear()
        _VALUES[value] = logged
    return logged


def _vw_features(features: Mapping[str, FeatureValue]) -> dict[str, FeatureValue]:
    # The cache lookups are inlined (`or` falls back on a miss; no name or value escapes
    # to ""): a function call per feature cost as much as the rest of the loop.
    names, values = _NAMES, _VALUES
    out: dict[str, FeatureValue] = {}
    for key, value in features.items():
        out[names.get(key) or vw_name(key)] = (
            (values.get(value) or _string_value(value)) if isinstance(value, str) else value
        )
    return out


def _vw_namespaces(namespaces: Namespaces) -> dict[str, object]:
    names = _NAMES
    return {
        (names.get(ns) or vw_name(ns)): _vw_features(features)
        for ns, features in namespaces.items()
    }


def build_vw_context(
    context: Namespaces, actions: Sequence[tuple[str, Namespaces]]
) -> dict[str, object]:
    """The DSJSON `c` object: shared namespaces plus one `_multi` entry per action, in order.

    Names and string values are written so that VW keeps distinct inputs distinct (see the
    module docstring). The action id needs no separator: `ActionId` holds one feature, `id`.
    """
    multi = []
    for action_id, features in actions:
        example = _vw_namespaces(features)
        example[ACTION_NS] = {"id": vw_name(action_id)}
        multi.append(example)
    shared = _vw_namespaces(context)
    shared["_multi"] = multi
    return shared


def encode_context(c: Mapping[str, object]) -> bytes:
    return orjson.dumps(c)


def predict_line(c_json: bytes) -> str:
    """The smallest DSJSON line VW scores identically to the full logged decision line."""
    return '{"a":[1],"c":' + c_json.decode() + "}"


def decision_line(
    *,
    event_id: str,
    ts: str,
    order: Sequence[int],
    probabilities: Sequence[float],
    c_json: bytes,
    experiment: str,
    model_id: str,
    action_ids: Sequence[str],
    sample_prob: float,
    deferred: bool,
    mode: str = "online",
    holdout: bool = False,
    unit_id: str | None = None,
    holdout_share: float = 0.0,
    baseline_action: str | None = None,
) -> bytes:
    """A decision as one DSJSON line; `order` lists 0-based action indexes, chosen first.

    `mode` is the experiment's learning mode, `holdout` whether the decision went to the
    control group, `unit_id` the unit that assignment hashed (the event id unless the request
    named one), `holdout_share` the share configured when it was made (so the lift can be
    computed per period when it changes), `baseline_action` the app's own choice (the
    request's, or the first eligible action). VW's parser skips these keys.
    """
    head = orjson.dumps(
        {
            "EventId": event_id,
            "Timestamp": ts,
            "Version": DSJSON_VERSION,
            "a": [i + 1 for i in order],
            "p": [probabilities[i] for i in order],
        }
    )
    tail = orjson.dumps(
        {
            "VWState": {"m": model_id},
            "experiment": experiment,
            "model_id": model_id,
            "action_ids": list(action_ids),
            "sample_prob": sample_prob,
            "deferred": deferred,
            "mode": mode,
            "holdout": holdout,
            "unit_id": event_id if unit_id is None else unit_id,
            "holdout_share": holdout_share,
            "baseline_action": action_ids[0] if baseline_action is None else baseline_action,
        }
    )
    return head[:-1] + b',"c":' + c_json + b"," + tail[1:] + b"\n"


def outcome_line(
    *,
    event_id: str,
    ts: str,
    kind: str,
    value: float | None = None,
    idempotency_key: str | None = None,
) -> bytes:
    """A reward (`kind="reward"`, with `value`) or an activation (`kind="activate"`)."""
    record: dict[str, object] = {"EventId": event_id, "Timestamp": ts, "kind": kind}
    if kind == "reward":
        record["value"] = value
    record["idempotency_key"] = idempotency_key
    return orjson.dumps(record) + b"\n"


def labelled_line(decision: bytes, *, chosen: int, probability: float, reward: float) -> bytes:
    """A decision line turned into a learnable one (the joined-data layout), no newline.

    The label keys go first because VW's streaming parser ignores labels after "c".
    `_labelIndex` is the chosen action's 0-based position in `_multi`, which is where VW
    credits the cost (not its position in "a"). `0.0 - reward` avoids writing a "-0.0" cost.
    """
    labels = orjson.dumps(
        {
            "_label_cost": 0.0 - reward,
            "_label_probability": probability,
            "_label_Action": chosen + 1,
            "_labelIndex": chosen,
        }
    )
    return labels[:-1] + b"," + decision[1:].rstrip(b"\n")
