"""The one encoding of a context and its actions, checked against VW's own --dsjson parser."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
import vowpalwabbit

from cbloop import encoding
from cbloop.clock import format_ts
from cbloop.encoding import (
    ACTION_NS,
    Namespaces,
    build_vw_context,
    decision_line,
    encode_context,
    outcome_line,
    predict_line,
    vw_name,
)
from cbloop.sampling import choose, normalize_pmf, ranking_order, split_draw

VW_ARGS = "--cb_explore_adf --dsjson --quiet --epsilon 0.1 --interactions :: --random_seed 3"

ACTIONS: list[tuple[str, Namespaces]] = [
    ("sports", {"topic": {"kind": "sports", "long": True}}),
    ("politics", {"topic": {"kind": "politics", "long": False}, "meta": {"age_h": 3.5}}),
    ("music", {"topic": {"kind": "music"}}),
]
CONTEXT: Namespaces = {"user": {"city": "paris", "age": 31, "premium": True}}


@pytest.fixture
def ws() -> Iterator[vowpalwabbit.Workspace]:
    workspace = vowpalwabbit.Workspace(VW_ARGS)
    yield workspace
    workspace.finish()


def _log_decision(
    event_id: str,
    pmf: Sequence[float],
    context: Namespaces = CONTEXT,
    actions: Sequence[tuple[str, Namespaces]] = ACTIONS,
) -> bytes:
    c_json = encode_context(build_vw_context(context, actions))
    chosen = choose(event_id, pmf)
    return decision_line(
        event_id=event_id,
        ts=format_ts(datetime(2026, 11, 22, 12, 0, 0, 123456, tzinfo=UTC)),
        order=ranking_order(pmf, chosen),
        probabilities=pmf,
        c_json=c_json,
        experiment="default",
        model_id="m-test",
        action_ids=[a for a, _ in actions],
        sample_prob=split_draw(event_id),
        deferred=False,
    )


def _joined(line: bytes, reward: float, label_index: int | None = None) -> str:
    """The pipeline's joined line: labels first, then the decision line untouched."""
    record = orjson.loads(line)
    chosen = record["a"][0]
    labels = {
        "_label_cost": -reward,
        "_label_probability": record["p"][0],
        "_label_Action": chosen,
        "_labelIndex": chosen - 1 if label_index is None else label_index,
    }
    return orjson.dumps(labels)[:-1].decode() + "," + line.decode()[1:].rstrip("\n")


def _pmf(ws: vowpalwabbit.Workspace, context: Namespaces = CONTEXT) -> list[float]:
    return list(ws.predict(predict_line(encode_context(build_vw_context(context, ACTIONS)))))


def _train(ws: vowpalwabbit.Workspace, rewarded: int, n: int = 30) -> None:
    """Reward the action at `rewarded` (0-based) every time it is logged as chosen."""
    uniform = [1 / 3] * 3
    for i in range(n):
        line = _log_decision(f"train-{rewarded}-{i}", uniform)
        chosen = orjson.loads(line)["a"][0] - 1
        ws.learn(_joined(line, 1.0 if chosen == rewarded else 0.0))


# --------------------------------------------------------------------------- the c object


def test_context_keeps_shared_namespaces_and_adds_one_multi_entry_per_action_in_order() -> None:
    c = build_vw_context(CONTEXT, ACTIONS)
    # String values carry the "=" that separates them from their key in VW's feature name.
    assert c["user"] == {"city": "=paris", "age": 31, "premium": True}
    multi = c["_multi"]
    assert isinstance(multi, list)
    assert [m[ACTION_NS] for m in multi] == [{"id": "sports"}, {"id": "politics"}, {"id": "music"}]
    assert multi[1]["meta"] == {"age_h": 3.5}
    assert multi[1]["topic"] == {"kind": "=politics", "long": False}


def test_action_without_features_still_carries_its_id() -> None:
    c = build_vw_context({}, [("only", {})])
    assert c == {"_multi": [{ACTION_NS: {"id": "only"}}]}


def test_encode_context_is_compact_utf8_json() -> None:
    c = build_vw_context({"u": {"city": "Zürich"}}, [("x", {})])
    raw = encode_context(c)
    assert "Zürich".encode() in raw
    assert orjson.loads(raw) == c
    assert b" " not in raw


# ----------------------------------------------------------------------- decision lines


def test_decision_line_has_the_contract_keys_in_order_and_one_newline() -> None:
    line = _log_decision("e-123", [0.6, 0.3, 0.1])
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    record = orjson.loads(line)
    assert list(record) == [
        "EventId",
        "Timestamp",
        "Version",
        "a",
        "p",
        "c",
        "VWState",
        "experiment",
        "model_id",
        "action_ids",
        "sample_prob",
        "deferred",
        "mode",
        "holdout",
        "unit_id",
        "holdout_share",
        "baseline_action",
    ]
    assert record["EventId"] == "e-123"
    assert record["Timestamp"] == "2026-11-22T12:00:00.123456Z"
    assert record["Version"] == "1"
    assert record["VWState"] == {"m": "m-test"}
    assert record["action_ids"] == ["sports", "politics", "music"]
    assert record["c"] == build_vw_context(CONTEXT, ACTIONS)
    assert record["sample_prob"] == split_draw("e-123")
    assert record["deferred"] is False
    # Defaults: online, no holdout, the event id as unit, the first action as baseline.
    assert record["mode"] == "online" and record["holdout"] is False
    assert record["unit_id"] == "e-123" and record["holdout_share"] == 0.0
    assert record["baseline_action"] == "sports"


def test_a_is_one_based_with_the_chosen_action_first_and_p_aligned_with_a() -> None:
    pmf = [0.2, 0.5, 0.3]
    line = decision_line(
        event_id="e-1",
        ts=format_ts(),
        order=[2, 1, 0],
        probabilities=pmf,
        c_json=encode_context(build_vw_context(CONTEXT, ACTIONS)),
        experiment="default",
        model_id="m",
        action_ids=["sports", "politics", "music"],
        sample_prob=0.5,
        deferred=True,
    )
    record = orjson.loads(line)
    assert record["a"] == [3, 2, 1]
    assert record["p"] == [0.3, 0.5, 0.2]
    assert record["deferred"] is True


def test_logged_probabilities_are_the_exact_float64_values() -> None:
    pmf = normalize_pmf([0.1, 0.2, 0.7000001], 3)
    record = orjson.loads(_log_decision("e-exact", pmf))
    by_action = dict(zip(record["a"], record["p"], strict=True))
    assert [by_action[i + 1] for i in range(3)] == pmf


def test_vw_scores_the_logged_line_exactly_like_the_predict_line(
    ws: vowpalwabbit.Workspace,
) -> None:
    _train(ws, rewarded=1)
    c_json = encode_context(build_vw_context(CONTEXT, ACTIONS))
    from_predict_line = ws.predict(predict_line(c_json))
    assert max(from_predict_line) > 0.5  # trained: not uniform, so the comparison means something
    for event_id in ("e-1", "e-2", "e-3", "e-4"):
        line = _log_decision(event_id, [0.2, 0.5, 0.3])
        assert ws.predict(line.decode()) == from_predict_line


def test_vw_pmf_follows_multi_order_not_the_logged_a_order(ws: vowpalwabbit.Workspace) -> None:
    _train(ws, rewarded=2)
    c_json = encode_context(build_vw_context(CONTEXT, ACTIONS))
    pmf = ws.predict(predict_line(c_json))
    line = decision_line(
        event_id="e-x",
        ts=format_ts(),
        order=[1, 0, 2],
        probabilities=[0.3, 0.3, 0.4],
        c_json=c_json,
        experiment="default",
        model_id="m",
        action_ids=["sports", "politics", "music"],
        sample_prob=0.1,
        deferred=False,
    )
    logged = ws.predict(line.decode())
    assert logged == pmf
    assert max(range(3), key=lambda i: logged[i]) == 2


# ------------------------------------------------------------------- learning from joins


def test_labels_first_joined_line_moves_the_policy_towards_the_rewarded_action(
    ws: vowpalwabbit.Workspace,
) -> None:
    before = _pmf(ws)
    assert max(before) - min(before) < 1e-6
    _train(ws, rewarded=1)
    after = _pmf(ws)
    assert max(range(3), key=lambda i: after[i]) == 1
    assert after[1] > 0.8


def test_labels_after_c_are_silently_ignored_by_vw(ws: vowpalwabbit.Workspace) -> None:
    # VW's streaming parser needs the labels before "c"; this documents that fact.
    for i in range(30):
        line = _log_decision(f"late-{i}", [1 / 3] * 3)
        record = orjson.loads(line)
        chosen = record["a"][0]
        labels = {
            "_label_cost": -1.0 if chosen == 2 else 0.0,
            "_label_probability": record["p"][0],
            "_label_Action": chosen,
            "_labelIndex": chosen - 1,
        }
        late = line.decode().rstrip("\n")[:-1] + "," + orjson.dumps(labels).decode()[1:]
        assert orjson.loads(late)["_labelIndex"] == chosen - 1
        ws.learn(late)
    after = _pmf(ws)
    assert max(after) - min(after) < 1e-6


def test_label_index_not_label_action_decides_which_action_gets_the_cost(
    ws: vowpalwabbit.Workspace,
) -> None:
    # _labelIndex indexes _multi (0-based) and wins over _label_Action; a constant 0 would
    # credit the first action whatever was chosen, so a join must write a[0] - 1.
    line = decision_line(
        event_id="e-idx",
        ts=format_ts(),
        order=[2, 0, 1],
        probabilities=[0.1, 0.1, 0.8],
        c_json=encode_context(build_vw_context(CONTEXT, ACTIONS)),
        experiment="default",
        model_id="m",
        action_ids=["sports", "politics", "music"],
        sample_prob=0.1,
        deferred=False,
    )
    assert orjson.loads(line)["a"][0] == 3
    for _ in range(30):
        ws.learn(_joined(line, 1.0, label_index=0))
    assert max(range(3), key=lambda i: _pmf(ws)[i]) == 0  # credited sports, not music


def test_label_index_from_the_chosen_action_credits_it(ws: vowpalwabbit.Workspace) -> None:
    line = decision_line(
        event_id="e-idx",
        ts=format_ts(),
        order=[2, 0, 1],
        probabilities=[0.1, 0.1, 0.8],
        c_json=encode_context(build_vw_context(CONTEXT, ACTIONS)),
        experiment="default",
        model_id="m",
        action_ids=["sports", "politics", "music"],
        sample_prob=0.1,
        deferred=False,
    )
    for _ in range(30):
        ws.learn(_joined(line, 1.0))
    assert max(range(3), key=lambda i: _pmf(ws)[i]) == 2


def test_feature_values_as_vw_reads_them() -> None:
    # true is the value 1, false is no feature, "city": "paris" is the feature "city=paris"
    # (not "cityparis", which a numeric feature of that name would also be).
    # softmax keeps the pmf a smooth function of the scores, so feature differences show.
    ws = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet --softmax --lambda 2 -q ::")
    try:
        _train(ws, rewarded=0)
        flagged: Namespaces = {"user": {"city": "paris", "age": 31, "premium": True}}
        as_number: Namespaces = {"user": {"city": "paris", "age": 31, "premium": 1}}
        spelled_out: Namespaces = {"user": {"cityparis": 1, "age": 31, "premium": True}}
        off: Namespaces = {"user": {"city": "paris", "age": 31, "premium": False}}
        absent: Namespaces = {"user": {"city": "paris", "age": 31}}
        elsewhere: Namespaces = {"user": {"city": "lyon", "age": 31, "premium": True}}
        assert _pmf(ws, flagged) == _pmf(ws, as_number)
        assert _pmf(ws, flagged) != _pmf(ws, spelled_out)
        assert _pmf(ws, off) == _pmf(ws, absent)
        assert _pmf(ws, flagged) != _pmf(ws, absent)
        assert _pmf(ws, flagged) != _pmf(ws, elsewhere)
    finally:
        ws.finish()


# ------------------------------------------------------------------ timestamps, outcomes


def test_timestamp_is_utc_with_microseconds_and_z() -> None:
    paris = timezone(timedelta(hours=1))
    moment = datetime(2026, 11, 22, 13, 0, 0, 42, tzinfo=paris)
    assert format_ts(moment) == "2026-11-22T12:00:00.000042Z"


def test_timestamp_defaults_to_now() -> None:
    ts = format_ts()
    parsed = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - parsed).total_seconds()) < 60


def test_reward_outcome_line() -> None:
    line = outcome_line(
        event_id="e-9",
        ts="2026-11-22T12:00:00.000000Z",
        kind="reward",
        value=0.5,
        idempotency_key="k-1",
    )
    assert line.endswith(b"\n")
    assert list(orjson.loads(line).items()) == [
        ("EventId", "e-9"),
        ("Timestamp", "2026-11-22T12:00:00.000000Z"),
        ("kind", "reward"),
        ("value", 0.5),
        ("idempotency_key", "k-1"),
    ]


def test_activate_outcome_line_has_no_value_and_null_key() -> None:
    line = outcome_line(event_id="e-9", ts="2026-11-22T12:00:00.000000Z", kind="activate")
    assert orjson.loads(line) == {
        "EventId": "e-9",
        "Timestamp": "2026-11-22T12:00:00.000000Z",
        "kind": "activate",
        "idempotency_key": None,
    }


# ------------------------------------------------------ names VW would otherwise conflate

CONFLATED_BY_VW = [
    ("sku:1", "sku 1", "sku|1", "sku\t1", "sku_1", "sku=1", "sku%3A1"),
    ("a\x00b", "a\x00c", "a"),
]


@pytest.mark.parametrize("group", CONFLATED_BY_VW)
def test_escaped_names_stay_distinct(group: Sequence[str]) -> None:
    escaped = [vw_name(text) for text in group]
    assert len(set(escaped)) == len(group)
    for name in escaped:
        assert not set(name) & set(" \t|:\x00=")


def test_plain_names_and_action_ids_are_written_unchanged() -> None:
    c = build_vw_context({"user": {"city_2": 1}}, [("article-42.v1", {})])
    assert c == {"user": {"city_2": 1}, "_multi": [{ACTION_NS: {"id": "article-42.v1"}}]}


def _trained_pmfs(
    target: Namespaces, control: Namespaces, probes: Sequence[Namespaces]
) -> list[list[float]]:
    """Reward action p in `target` and action q in `control`, then score each probe.

    The control makes the action ids alone uninformative, so a probe VW cannot tell from
    both gets about even odds, and only one VW confuses with `target` leans to p.
    """
    actions: list[tuple[str, Namespaces]] = [("p", {}), ("q", {})]
    ws = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet --softmax --lambda 3 -q ::")
    try:
        for i in range(120):
            context, good = (target, 0) if i % 2 == 0 else (control, 1)
            k = (i // 2) % 2
            labels = orjson.dumps(
                {
                    "_label_cost": -1.0 if k == good else 0.0,
                    "_label_probability": 0.5,
                    "_label_Action": k + 1,
                    "_labelIndex": k,
                }
            )
            c_json = encode_context(build_vw_context(context, actions)).decode()
            ws.learn(labels[:-1].decode() + f',"a":[{k + 1}],"c":' + c_json + "}")
        return [
            list(ws.predict(predict_line(encode_context(build_vw_context(c, actions)))))
            for c in (target, *probes)
        ]
    finally:
        ws.finish()


def test_key_and_value_boundary_is_kept_for_string_features() -> None:
    trained, moved = _trained_pmfs({"u": {"x": "yz"}}, {"u": {"w": "v"}}, [{"u": {"xy": "z"}}])
    assert trained[0] > 0.8  # learned for {"x": "yz"} ...
    assert moved[0] == pytest.approx(0.5, abs=0.15)  # ... and not for {"xy": "z"}


@pytest.mark.parametrize("probe", ["a b", "a|b", "a\tb", "a_b", "a", "a:b\x00tail"])
def test_values_vw_would_rewrite_stay_distinct_features(probe: str) -> None:
    trained, other = _trained_pmfs({"u": {"k": "a:b"}}, {"u": {"k": "c"}}, [{"u": {"k": probe}}])
    assert trained[0] > 0.8
    assert other[0] == pytest.approx(0.5, abs=0.15)


def test_escaping_cache_stays_bounded_and_answers_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(encoding, "_CACHE_LIMIT", 50)
    monkeypatch.setattr(encoding, "_NAMES", {})
    monkeypatch.setattr(encoding, "_VALUES", {})
    first = build_vw_context({"u": {"k a": "x:y"}}, [("a|1", {})])
    for i in range(500):  # a stream of unique values, like user ids
        build_vw_context({"u": {f"id {i}": f"v:{i}"}}, [])
    assert len(encoding._NAMES) <= 50
    assert len(encoding._VALUES) <= 50
    # Evicted entries are recomputed to the same escaped forms.
    assert build_vw_context({"u": {"k a": "x:y"}}, [("a|1", {})]) == first
    assert first == {"u": {"k%20a": "=x%3Ay"}, "_multi": [{ACTION_NS: {"id": "a%7C1"}}]}


def test_vw_reads_and_learns_mode_and_holdout_lines_as_if_the_new_keys_were_absent() -> None:
    """The mode/holdout keys of a decision line change nothing VW's --dsjson parser sees."""
    c_json = encode_context(build_vw_context(CONTEXT, ACTIONS))
    ids = ["sports", "politics", "music"]
    new_keys = ("mode", "holdout", "unit_id", "holdout_share", "baseline_action")
    with_keys = vowpalwabbit.Workspace(VW_ARGS)
    without_keys = vowpalwabbit.Workspace(VW_ARGS)
    for i in range(40):
        chosen = i % 3
        line = decision_line(
            event_id=f"e-{i}",
            ts=format_ts(),
            order=[chosen, *(j for j in range(3) if j != chosen)],
            probabilities=[1.0, 0.0, 0.0] if chosen == 0 else [0.2, 0.4, 0.4],
            c_json=c_json,
            experiment="default",
            model_id="m",
            action_ids=ids,
            sample_prob=0.5,
            deferred=False,
            mode="apprentice",
            holdout=i % 2 == 0,
            unit_id=f"user-{i % 7}",
            holdout_share=0.1,
            baseline_action="politics",
        )
        record = orjson.loads(line)
        assert all(key in record for key in new_keys)
        stripped = orjson.dumps({k: v for k, v in record.items() if k not in new_keys}) + b"\n"
        reward = 1.0 if chosen == 2 else 0.0
        with_keys.learn(_joined(line, reward))
        without_keys.learn(_joined(stripped, reward))
    probe = predict_line(c_json)
    assert with_keys.predict(probe) == without_keys.predict(probe)
    assert max(range(3), key=lambda j: with_keys.predict(probe)[j]) == 2
    with_keys.finish()
    without_keys.finish()
