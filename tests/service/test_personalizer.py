"""Personalizer's rank/reward/activate over HTTP: the same decision line as the native API."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from personalizer_helpers import (
    CONTEXT,
    NATIVE_CONTEXT,
    PERSONALIZER_RANK,
    actions,
    clone_root,
    decisions,
    joined_lines,
    native_actions,
    outcomes,
    running,
    settings_at,
)
from service_helpers import ClientFactory, logged, publish_model, train_model

from cbloop.settings import Settings

#: (event id, reward or None, deferred, activated) of the conversation both shapes hold.
CONVERSATION = [
    ("visit-1", 1.0, False, False),
    ("visit-2", 0.0, False, False),
    ("visit-3", 0.5, True, True),
    ("visit-4", None, True, False),
]
_JOIN = {"reward": {"wait_seconds": 60, "backward_seconds": 0}}


def _personalizer_conversation(client: TestClient) -> list[dict[str, Any]]:
    answers = []
    for event_id, reward, deferred, activated in CONVERSATION:
        body = {
            "contextFeatures": CONTEXT,
            "actions": actions(),
            "excludedActions": ["a3"],
            "eventId": event_id,
            "deferActivation": deferred,
        }
        r = client.post(PERSONALIZER_RANK, json=body)
        assert r.status_code == 201, r.text
        answers.append(r.json())
        if activated:
            assert client.post(f"/personalizer/v1.0/events/{event_id}/activate").status_code == 204
        if reward is not None:
            r = client.post(f"/personalizer/v1.0/events/{event_id}/reward", json={"value": reward})
            assert r.status_code == 204, r.text
            assert r.content == b""
    return answers


def _native_conversation(client: TestClient) -> list[dict[str, Any]]:
    answers = []
    for event_id, reward, deferred, activated in CONVERSATION:
        body = {
            "context": NATIVE_CONTEXT,
            "actions": native_actions(),
            "excluded_actions": ["a3"],
            "event_id": event_id,
            "defer_activation": deferred,
        }
        r = client.post("/v1/rank", json=body)
        assert r.status_code == 200, r.text
        answers.append(r.json())
        if activated:
            assert client.post(f"/v1/events/{event_id}/activate").status_code == 202
        if reward is not None:
            r = client.post(f"/v1/events/{event_id}/reward", json={"value": reward})
            assert r.status_code == 202
    return answers


def test_a_personalizer_conversation_logs_and_joins_like_the_native_one(tmp_path: Path) -> None:
    first = settings_at(tmp_path / "personalizer", experiments={"default": _JOIN})
    # A trained model, so the pmf is skewed and a wrong feature mapping would change it.
    publish_model(first, train_model(first))
    clone_root(first.storage.root, tmp_path / "native")
    second = settings_at(tmp_path / "native", experiments={"default": _JOIN})

    with running(first) as client:
        personalizer = _personalizer_conversation(client)
    with running(second) as client:
        native = _native_conversation(client)

    for p, n in zip(personalizer, native, strict=True):
        assert p["eventId"] == n["event_id"]
        assert p["rewardActionId"] == n["action_id"] == p["ranking"][0]["id"]
        assert p["ranking"] == n["ranking"]  # same order, same probabilities
        assert p["ranking"][-1] == {"id": "a3", "probability": 0.0}
    assert len({round(x["probability"], 6) for x in native[0]["ranking"][:3]}) > 1, "skewed pmf"

    logged_p, logged_n = decisions(first), decisions(second)
    assert len(logged_p) == len(CONVERSATION)
    assert logged_p == logged_n
    assert outcomes(first) == outcomes(second)

    joined_p, joined_n = joined_lines(first), joined_lines(second)
    # visit-4 was deferred and never activated: learned from by neither.
    assert [x["EventId"] for x in joined_p] == ["visit-1", "visit-2", "visit-3"]
    assert joined_p == joined_n
    rewards = {x["EventId"]: -x["_label_cost"] for x in joined_p}
    assert rewards == {"visit-1": 1.0, "visit-2": 0.0, "visit-3": 0.5}
    for line, answer in zip(joined_p, personalizer, strict=False):
        assert line["_label_probability"] == answer["ranking"][0]["probability"]


def test_nested_features_become_the_documented_namespaces(
    client: TestClient, read_log: Callable[[str], list[dict[str, Any]]]
) -> None:
    body = {"contextFeatures": CONTEXT, "actions": actions(2), "eventId": "nested-1"}
    assert client.post(PERSONALIZER_RANK, json=body).status_code == 201
    (line,) = read_log("decisions")
    c = line["c"]
    assert c["user"] == {"age": 31, "premium": True, "loc.city": "=paris", "loc.zip": 75011}
    assert c["device"] == {"os": "=android", "tags[0]": "=night", "tags[1]": "=wifi"}
    assert c["default"] == {"hour": 21}
    assert c["_multi"][0] == {"item": {"topic": "=t0", "len": 100}, "ActionId": {"id": "a0"}}


def test_every_base_path_and_experiment_prefix_ranks(make_client: ClientFactory) -> None:
    client = make_client(experiments={"other": {}})
    body = {"contextFeatures": CONTEXT, "actions": actions(2)}
    for url in (
        "/personalizer/v1.0/rank",
        "/personalizer/v1.1-preview.1/rank",
        "/personalizer/v1.1-preview.3/rank",
        "/personalizer/rank?api-version=2022-09-01-preview",
        "/experiments/other/personalizer/v1.0/rank",
        "/experiments/other/personalizer/rank?api-version=2022-09-01-preview",
    ):
        r = client.post(url, json=body)
        assert r.status_code == 201, (url, r.text)
        assert set(r.json()) == {"ranking", "eventId", "rewardActionId"}
    unknown = client.post("/experiments/nope/personalizer/v1.0/rank", json=body)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "ResourceNotFound"
    no_version = client.post("/personalizer/rank", json=body)
    assert no_version.status_code == 400
    assert "api-version" in no_version.json()["error"]["message"]


def test_the_experiment_prefix_decides_with_that_experiment(
    make_client: ClientFactory,
) -> None:
    client = make_client(experiments={"other": {}})
    body = {"contextFeatures": CONTEXT, "actions": actions(2), "eventId": "which-1"}
    assert client.post("/experiments/other/personalizer/v1.0/rank", json=body).status_code == 201
    root = client.app.state.service.settings.storage.root  # type: ignore[attr-defined]
    assert [d["experiment"] for d in logged(root, "decisions")] == ["other"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"contextFeatures": CONTEXT}, "actions"),
        ({"actions": []}, "actions"),
        ({"actions": [{"id": "a"}, {"id": "a"}]}, "duplicate action id"),
        ({"contextFeatures": ["not an object"], "actions": actions(2)}, "contextFeatures[0]"),
        ({"contextFeatures": [{"u": {"_x": 1}}], "actions": actions(2)}, "contextFeatures[0].u._x"),
        ({"contextFeatures": [{"u": {"x": 1}}, {"u": {"x": 2}}], "actions": actions(2)}, "twice"),
        ({"contextFeatures": [{"u": {"x": 1e12}}], "actions": actions(2)}, "between"),
        ({"actions": actions(2), "excludeActions": ["a0"]}, "excludeActions"),
        ({"actions": actions(2), "eventId": "has space"}, "event_id"),
        ({"actions": actions(2), "excludedActions": ["a0", "a1"]}, "excluded"),
        ({"actions": [{"id": "a", "features": [{"ActionId": {"x": 1}}]}]}, "ActionId"),
    ],
)
def test_bad_rank_bodies_get_personalizer_400s_and_nothing_is_logged(
    client: TestClient,
    read_log: Callable[[str], list[dict[str, Any]]],
    body: dict[str, Any],
    named: str,
) -> None:
    r = client.post(PERSONALIZER_RANK, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "BadRequest"
    assert named in error["message"]
    assert read_log("decisions") == []


def test_bad_reward_and_activate_requests_get_personalizer_400s(
    client: TestClient, read_log: Callable[[str], list[dict[str, Any]]]
) -> None:
    for body in ({"value": "1"}, {}, {"value": 1e300}, {"value": 1, "extra": 2}):
        r = client.post("/personalizer/v1.0/events/e-1/reward", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["code"] == "BadRequest"
        assert r.json()["error"]["innerError"] == {"code": "InvalidRewardRequest"}
    not_json = client.post(
        "/personalizer/v1.0/events/e-1/reward",
        content=b"{oops",
        headers={"content-type": "application/json"},
    )
    assert not_json.status_code == 400
    bad_id = client.post("/personalizer/v1.0/events/bad%20id/activate")
    assert bad_id.status_code == 400
    assert "eventId" in bad_id.json()["error"]["message"]
    assert read_log("outcomes") == []


def test_multi_slot_routes_answer_501_saying_so(client: TestClient) -> None:
    for path in (
        "/personalizer/v1.1-preview.1/multislot/rank",
        "/personalizer/multislot/events/e1/reward?api-version=2022-09-01-preview",
        "/experiments/default/personalizer/v1.1-preview.3/multislot/events/e1/activate",
    ):
        r = client.post(path, json={})
        assert r.status_code == 501, path
        assert "multi-slot" in r.json()["error"]["message"]


def test_unknown_personalizer_paths_are_404_in_personalizer_shape(client: TestClient) -> None:
    r = client.get("/personalizer/v1.0/no/such/thing")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "ResourceNotFound"
    # The native API keeps its own shape.
    native = client.post("/v1/rank", json={"context": {}, "actions": []})
    assert native.status_code == 422
    assert native.json()["error"] == "invalid_request"


def test_the_key_arrives_in_ocp_apim_subscription_key(make_client: ClientFactory) -> None:
    client = make_client(service={"api_keys": ["client-k"], "admin_api_keys": ["admin-k"]})
    body = {"contextFeatures": CONTEXT, "actions": actions(2)}
    missing = client.post(PERSONALIZER_RANK, json=body)
    assert missing.status_code == 401
    assert set(missing.json()["error"]) >= {"code", "message"}
    wrong = client.post(PERSONALIZER_RANK, json=body, headers={"Ocp-Apim-Subscription-Key": "x"})
    assert wrong.status_code == 401
    ok = client.post(
        PERSONALIZER_RANK, json=body, headers={"Ocp-Apim-Subscription-Key": "client-k"}
    )
    assert ok.status_code == 201
    event = ok.json()["eventId"]
    reward = client.post(
        f"/personalizer/v1.0/events/{event}/reward",
        json={"value": 1},
        headers={"Ocp-Apim-Subscription-Key": "client-k"},
    )
    assert reward.status_code == 204
    # Administration needs an admin key.
    config = "/personalizer/v1.0/configurations/service"
    as_client = client.get(config, headers={"Ocp-Apim-Subscription-Key": "client-k"})
    assert as_client.status_code == 403
    assert client.get(config, headers={"Ocp-Apim-Subscription-Key": "admin-k"}).status_code == 200


def test_rewards_outside_the_experiment_range_are_refused(make_client: ClientFactory) -> None:
    client = make_client(experiments={"default": {"reward": {"min": -1, "max": 1}}})
    r = client.post("/personalizer/v1.0/events/e-9/reward", json={"value": 2})
    assert r.status_code == 400
    assert "outside" in r.json()["error"]["message"]


def _settings(client: TestClient) -> Settings:
    settings: Settings = client.app.state.service.settings  # type: ignore[attr-defined]
    return settings
