"""Every kind of bad input gets a 4xx naming the problem, and nothing reaches the event log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from service_helpers import rank_body

ReadLog = Callable[[str], list[dict[str, Any]]]


def _raw(body: dict[str, Any]) -> bytes:
    return orjson.dumps(body)


def _with_feature(value_json: str) -> bytes:
    """A rank body whose context feature user.age has the given raw JSON value."""
    return _raw(rank_body()).replace(b'"age":31', b'"age":' + value_json.encode())


def _assert_refused(
    response: Any, read_log: ReadLog, status: int, field: str, words: str = ""
) -> None:
    assert response.status_code == status, response.text
    answer = response.json()
    assert field in answer["detail"], answer
    if words:
        assert words in answer["detail"].lower(), answer
    assert read_log("decisions") == []
    assert read_log("outcomes") == []


RANK_CASES: dict[str, tuple[bytes, int, str, str]] = {
    # id: (raw body, status, field named, words in the message)
    "non_json_body": (b"{not json", 400, "body", "json"),
    "empty_body": (b"", 400, "body", "json"),
    "json_but_not_an_object": (b"[1, 2]", 422, "body", "object"),
    "missing_actions": (_raw({"context": {}}), 422, "actions", "required"),
    "empty_actions": (_raw(rank_body(n_actions=0)), 422, "actions", "at least 1"),
    "duplicate_action_ids": (
        _raw({"context": {}, "actions": [{"id": "x"}, {"id": "y"}, {"id": "x"}]}),
        422,
        "actions",
        "duplicate action id 'x'",
    ),
    "all_actions_excluded": (
        _raw(rank_body(n_actions=2, excluded_actions=["a0", "a1"])),
        422,
        "excluded_actions",
        "excluded",
    ),
    "feature_value_list": (_with_feature("[1, 2]"), 422, "context.user.age", "list"),
    "feature_value_object": (_with_feature('{"x": 1}'), 422, "context.user.age", "object"),
    "feature_value_null": (_with_feature("null"), 422, "context.user.age", "null"),
    "feature_value_nan": (_with_feature("NaN"), 422, "context.user.age", "finite"),
    "feature_value_infinity": (_with_feature("Infinity"), 422, "context.user.age", "finite"),
    "feature_value_overflowing_number": (_with_feature("1e999"), 422, "context.user.age", "finite"),
    "action_feature_value_list": (
        _raw(rank_body()).replace(b'"len":100', b'"len":[1]'),
        422,
        "actions[0].features.item.len",
        "list",
    ),
    "unknown_experiment": (_raw(rank_body(experiment="nope")), 404, "experiment", "'nope'"),
    "event_id_too_long": (_raw(rank_body(event_id="e" * 257)), 422, "event_id", "256"),
    "event_id_bad_characters": (_raw(rank_body(event_id="e 1/2")), 422, "event_id", "pattern"),
    "namespace_starting_with_underscore": (
        _raw({"context": {"_multi": {"x": 1}}, "actions": [{"id": "a"}]}),
        422,
        "context._multi",
        "'_'",
    ),
    "reserved_action_id_namespace": (
        _raw({"context": {}, "actions": [{"id": "a", "features": {"ActionId": {"id": "b"}}}]}),
        422,
        "ActionId",
        "reserved",
    ),
    "feature_name_starting_with_underscore": (
        _raw({"context": {"user": {"_text": "a b"}}, "actions": [{"id": "a"}]}),
        422,
        "context.user._text",
        "'_'",
    ),
    "feature_value_beyond_float32_safe_range": (
        _with_feature("1e12"),
        422,
        "context.user.age",
        "between -1e+06 and 1e+06",
    ),
    "action_feature_value_beyond_float32_safe_range": (
        _raw(rank_body()).replace(b'"len":100', b'"len":-1000001'),
        422,
        "actions[0].features.item.len",
        "between -1e+06 and 1e+06",
    ),
    "namespace_starting_with_non_ascii": (
        _raw({"context": {"été": {"x": 1}}, "actions": [{"id": "a"}]}),
        422,
        "context.été",
        "ascii",
    ),
    # This one crashed the VW process before names were checked (found by schemathesis).
    "action_namespace_starting_with_non_ascii": (
        _raw({"context": {}, "actions": [{"id": "a", "features": {"\U0007da75m": {}}}]}),
        422,
        "actions[0].features",
        "ascii",
    ),
    "misspelt_field": (_raw(rank_body(exclude_actions=["a0"])), 422, "exclude_actions", "extra"),
}


@pytest.mark.parametrize("case", list(RANK_CASES))
def test_bad_rank_request_is_refused_and_logs_nothing(
    case: str, client: TestClient, read_log: ReadLog
) -> None:
    raw, status, field, words = RANK_CASES[case]
    response = client.post("/v1/rank", content=raw, headers={"content-type": "application/json"})
    _assert_refused(response, read_log, status, field, words)


def test_oversized_rank_body_is_refused_with_413(client: TestClient, read_log: ReadLog) -> None:
    limit = client.app.state.service.settings.service.max_body_bytes  # type: ignore[attr-defined]
    body = rank_body()
    body["context"]["user"]["city"] = "x" * limit
    response = client.post("/v1/rank", json=body)
    _assert_refused(response, read_log, 413, "body", "larger than")


def test_oversized_chunked_body_is_refused_with_413(client: TestClient, read_log: ReadLog) -> None:
    limit = client.app.state.service.settings.service.max_body_bytes  # type: ignore[attr-defined]

    def chunks() -> Any:  # no Content-Length: the limit must count what arrives
        yield b'{"context": {"user": {"city": "'
        for _ in range(limit // 4096 + 2):
            yield b"x" * 4096
        yield b'"}}, "actions": [{"id": "a"}]}'

    response = client.post(
        "/v1/rank", content=chunks(), headers={"content-type": "application/json"}
    )
    _assert_refused(response, read_log, 413, "body", "larger than")


REWARD_CASES: dict[str, tuple[str, bytes, int, str, str]] = {
    # id: (event id in the path, raw body, status, field named, words in the message)
    "reward_nan": ("e1", b'{"value": NaN}', 422, "value", "finite"),
    "reward_infinity": ("e1", b'{"value": Infinity}', 422, "value", "finite"),
    "reward_overflowing_number": ("e1", b'{"value": 1e999}', 422, "value", "finite"),
    "reward_string": ("e1", b'{"value": "1.0"}', 422, "value", "number"),
    "reward_bool": ("e1", b'{"value": true}', 422, "value", "number"),
    "reward_null": ("e1", b'{"value": null}', 422, "value", "number"),
    "reward_missing": ("e1", b"{}", 422, "value", "required"),
    "reward_non_json": ("e1", b"value=1", 400, "body", "json"),
    "reward_event_id_too_long": ("e" * 257, b'{"value": 1}', 422, "event_id", "256"),
    "reward_event_id_bad_characters": ("e%201", b'{"value": 1}', 422, "event_id", "pattern"),
}


@pytest.mark.parametrize("case", list(REWARD_CASES))
def test_bad_reward_is_refused_and_logs_nothing(
    case: str, client: TestClient, read_log: ReadLog
) -> None:
    event_id, raw, status, field, words = REWARD_CASES[case]
    response = client.post(
        f"/v1/events/{event_id}/reward",
        content=raw,
        headers={"content-type": "application/json"},
    )
    _assert_refused(response, read_log, status, field, words)


def test_oversized_reward_body_is_refused_with_413(client: TestClient, read_log: ReadLog) -> None:
    limit = client.app.state.service.settings.service.max_body_bytes  # type: ignore[attr-defined]
    response = client.post("/v1/events/e1/reward", json={"value": 1.0, "pad": "x" * limit})
    _assert_refused(response, read_log, 413, "body", "larger than")


@pytest.mark.parametrize("event_id", ["e" * 257, "bad%20id", "semi;colon"])
def test_bad_event_id_on_activate_is_refused(
    event_id: str, client: TestClient, read_log: ReadLog
) -> None:
    response = client.post(f"/v1/events/{event_id}/activate")
    _assert_refused(response, read_log, 422, "event_id")
