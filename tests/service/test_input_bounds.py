"""Values VW cannot learn from safely are refused at the door, and nothing of them is logged."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import ClientFactory, logged, rank_body

from cbloop.settings import Settings, SettingsError

ReadLog = Callable[[str], list[dict[str, Any]]]


def test_reward_beyond_the_default_range_is_refused_naming_it(
    client: TestClient, read_log: ReadLog
) -> None:
    response = client.post("/v1/events/e1/reward", json={"value": 1e308})
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"] == "reward_out_of_range"
    assert "[-1e+06, 1e+06]" in answer["detail"]
    assert answer["errors"][0]["field"] == "value"
    assert read_log("outcomes") == []
    assert client.post("/v1/events/e1/reward", json={"value": -1e6}).status_code == 202
    assert [line["value"] for line in read_log("outcomes")] == [-1e6]


def test_reward_range_follows_the_named_experiment(make_client: ClientFactory) -> None:
    # No `client`/`read_log` fixture here: they would start a default app on the same
    # storage root first, and the store's experiments (seeded then) win over this config.
    client = make_client(
        experiments={
            "default": {"reward": {"min": 0.0, "max": 1.0}},
            "revenue": {"reward": {"min": 0.0, "max": 500.0}},
        }
    )
    root = client.app.state.service.settings.storage.root  # type: ignore[attr-defined]
    narrow = client.post("/v1/events/e1/reward", json={"value": 2.0, "experiment": "default"})
    assert narrow.status_code == 422
    assert "[0, 1]" in narrow.json()["detail"]
    assert "experiments.default.reward" in narrow.json()["detail"]
    wide = client.post("/v1/events/e2/reward", json={"value": 2.0, "experiment": "revenue"})
    assert wide.status_code == 202
    # Unnamed: the widest configured range, so no experiment's valid reward is refused.
    assert client.post("/v1/events/e3/reward", json={"value": 499.0}).status_code == 202
    assert client.post("/v1/events/e4/reward", json={"value": -0.5}).status_code == 422
    unknown = client.post("/v1/events/e5/reward", json={"value": 0.5, "experiment": "nope"})
    assert unknown.status_code == 404
    assert [line["EventId"] for line in logged(root, "outcomes")] == ["e2", "e3"]


def test_reward_range_must_be_ordered(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(SettingsError, match=r"reward\.min \(1\) must be below reward\.max \(1\)"):
        make_settings(experiments={"default": {"reward": {"min": 1.0, "max": 1.0}}})


@pytest.mark.parametrize("value", [1e6 + 1, -2e6, 1e12])
def test_numeric_feature_beyond_a_million_is_refused_naming_the_field(
    client: TestClient, read_log: ReadLog, value: float
) -> None:
    body = rank_body()
    body["actions"][1]["features"]["item"]["len"] = value
    response = client.post("/v1/rank", json=body)
    assert response.status_code == 422, response.text
    assert "actions[1].features.item.len" in response.json()["detail"]
    assert "between -1e+06 and 1e+06" in response.json()["detail"]
    assert read_log("decisions") == []


def test_numeric_feature_at_the_bound_is_accepted(client: TestClient, read_log: ReadLog) -> None:
    body = rank_body()
    body["context"]["user"]["age"] = 1e6
    assert client.post("/v1/rank", json=body).status_code == 200
    assert read_log("decisions")[0]["c"]["user"]["age"] == 1e6


def test_features_are_counted_as_vw_scores_them_context_times_actions(
    make_client: ClientFactory,
) -> None:
    # Few features in the body (well under max_features) but many once VW copies the
    # context into each action: 64 context features x 64 actions.
    client = make_client(service={"max_scored_features": 4000})
    body: dict[str, Any] = {
        "context": {"u": {f"f{i}": i for i in range(64)}},
        "actions": [{"id": f"a{i}"} for i in range(64)],
    }
    response = client.post("/v1/rank", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "4160 features to score" in detail  # (64 + 1) x 64
    assert "service.max_scored_features=4000" in detail
    root = client.app.state.service.settings.storage.root  # type: ignore[attr-defined]
    assert logged(root, "decisions") == []
    body["actions"] = body["actions"][:60]  # (64 + 1) x 60 = 3900
    assert client.post("/v1/rank", json=body).status_code == 200
