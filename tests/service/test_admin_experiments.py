"""/v1/admin/experiments through the real app lifespan: create, read, update, archive."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import ClientFactory, app_settings, logged, rank_body

from cbloop.experiments import ExperimentCatalog
from cbloop.registry import ModelRegistry
from cbloop.storage import open_store

CLIENT_KEY = "client-key-123"
ADMIN_KEY = "admin-key-456"
ADMIN = {"X-API-Key": ADMIN_KEY}
CLIENT = {"X-API-Key": CLIENT_KEY}
BASE = "/v1/admin/experiments"


@pytest.fixture
def keyed(make_client: ClientFactory) -> TestClient:
    return make_client(
        service={
            "api_keys": [CLIENT_KEY],
            "admin_api_keys": [ADMIN_KEY],
            "model_poll_seconds": 0.1,
        },
        experiments={"default": {}},
    )


def _catalog(client: TestClient) -> ExperimentCatalog:
    return ExperimentCatalog(open_store(app_settings(client).storage))


def _create(client: TestClient, name: str, settings: dict[str, Any]) -> Any:
    return client.post(
        BASE, json={"name": name, "settings": settings, "why": "test"}, headers=ADMIN
    )


def test_created_experiment_ranks_at_once_with_its_own_settings(keyed: TestClient) -> None:
    created = _create(keyed, "homepage", {"exploration": {"type": "egreedy", "epsilon": 0.2}})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["version"] == 1 and body["archived"] is False
    assert "--epsilon 0.2" in body["vw_arguments"]
    assert body["by"].startswith("admin-api (key sha256:")
    assert ADMIN_KEY not in body["by"]

    answer = keyed.post("/v1/rank", json=rank_body(experiment="homepage"), headers=CLIENT)
    assert answer.status_code == 200, answer.text
    assert answer.json()["experiment"] == "homepage"
    model = keyed.get("/v1/experiments/homepage/model", headers=ADMIN).json()
    assert "--epsilon 0.2" in model["vw_args"]
    # The first model was made in the registry, like `cbloop serve` makes one at start.
    pointer = ModelRegistry(open_store(app_settings(keyed).storage)).current("homepage")
    assert pointer is not None and pointer.model_id == answer.json()["model_id"]
    root = app_settings(keyed).storage.root
    assert [d["experiment"] for d in logged(root, "decisions")] == ["homepage"]
    listed = keyed.get(BASE, headers=ADMIN).json()["experiments"]
    assert [e["name"] for e in listed] == ["default", "homepage"]


def test_a_bad_value_is_a_422_naming_the_key_and_nothing_changes(keyed: TestClient) -> None:
    assert _create(keyed, "homepage", {}).status_code == 201
    bad = keyed.patch(
        f"{BASE}/homepage",
        json={"settings": {"exploration": {"epsilon": 3}}, "why": "more exploration"},
        headers=ADMIN,
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "exploration.epsilon"
    assert "exploration.epsilon" in bad.json()["detail"]
    unknown_key = keyed.patch(
        f"{BASE}/homepage", json={"settings": {"reward": {"wait": 5}}, "why": "x"}, headers=ADMIN
    )
    assert unknown_key.status_code == 422
    assert unknown_key.json()["errors"][0]["field"] == "reward.wait"
    bad_create = _create(keyed, "other", {"vw_args": "--epsilon 0.1"})
    assert bad_create.status_code == 422
    assert bad_create.json()["errors"][0]["field"] == "vw_args"
    no_why = keyed.patch(
        f"{BASE}/homepage", json={"settings": {"reward": {"wait_seconds": 5}}}, headers=ADMIN
    )
    assert no_why.status_code == 422 and "why" in no_why.json()["detail"]

    catalog = _catalog(keyed)
    assert [r.version for r in catalog.history("homepage")] == [1]
    assert catalog.find("other") is None
    assert (
        keyed.post("/v1/rank", json=rank_body(experiment="other"), headers=CLIENT).status_code
        == 404
    )


def test_update_is_a_new_version_with_who_and_why(keyed: TestClient) -> None:
    assert _create(keyed, "homepage", {}).status_code == 201
    changed = keyed.patch(
        f"{BASE}/homepage",
        json={
            "settings": {"reward": {"min": 0, "max": 1}},
            "why": "binary clicks",
            "by": "alice",
            "evidence": {"ticket": "T-1"},
        },
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["version"] == 2
    history = keyed.get(f"{BASE}/homepage/history", headers=ADMIN).json()["versions"]
    assert [(v["version"], v["why"]) for v in history] == [(1, "test"), (2, "binary clicks")]
    assert history[1]["by"].startswith("alice") and history[1]["evidence"] == {"ticket": "T-1"}
    # The reward route follows the new range on this worker at once.
    refused = keyed.post(
        "/v1/events/e1/reward", json={"value": 5, "experiment": "homepage"}, headers=CLIENT
    )
    assert refused.status_code == 422 and "[0, 1]" in refused.json()["detail"]


def test_changing_vw_arguments_starts_a_fresh_model_and_says_why(keyed: TestClient) -> None:
    assert _create(keyed, "homepage", {}).status_code == 201
    before = keyed.get("/v1/experiments/homepage/model", headers=ADMIN).json()["model_id"]
    changed = keyed.patch(
        f"{BASE}/homepage",
        json={"settings": {"vw_args": "--interactions :A -b 16"}, "why": "smaller model"},
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.text
    reason = changed.json()["fresh_model_reason"]
    fresh = changed.json()["fresh_model_id"]
    assert reason is not None and "-b 16" in reason and fresh != before
    pointer = ModelRegistry(open_store(app_settings(keyed).storage)).current("homepage")
    assert pointer is not None and pointer.model_id == fresh and reason in pointer.reason
    # The old model serves until the watcher swaps the fresh one in (one poll), never both
    # the old settings' arguments and a refusal: the fresh model is not refused.
    deadline = time.monotonic() + 10
    while True:
        answer = keyed.post("/v1/rank", json=rank_body(experiment="homepage"), headers=CLIENT)
        assert answer.status_code == 200
        if answer.json()["model_id"] == fresh or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert answer.json()["model_id"] == fresh
    served = keyed.get("/v1/experiments/homepage/model", headers=ADMIN).json()
    assert "-b 16" in served["vw_args"] and served["refused"] == []


def test_archived_experiment_refuses_rank_and_update(keyed: TestClient) -> None:
    assert _create(keyed, "homepage", {}).status_code == 201
    archived = keyed.post(f"{BASE}/homepage/archive", json={"why": "done"}, headers=ADMIN)
    assert archived.status_code == 200 and archived.json()["archived"] is True
    rank = keyed.post("/v1/rank", json=rank_body(experiment="homepage"), headers=CLIENT)
    assert rank.status_code == 404
    assert rank.json()["error"] == "experiment_archived"
    assert "archived" in rank.json()["detail"]
    update = keyed.patch(f"{BASE}/homepage", json={"settings": {}, "why": "again"}, headers=ADMIN)
    assert update.status_code == 409
    assert [e["name"] for e in keyed.get(BASE, headers=ADMIN).json()["experiments"]] == ["default"]
    everything = keyed.get(BASE, params={"include_archived": True}, headers=ADMIN).json()
    assert {e["name"]: e["archived"] for e in everything["experiments"]} == {
        "default": False,
        "homepage": True,
    }
    # Created again, it serves again, as a new version of the same history.
    again = _create(keyed, "homepage", {})
    assert again.status_code == 201 and again.json()["version"] == 3
    assert (
        keyed.post("/v1/rank", json=rank_body(experiment="homepage"), headers=CLIENT).status_code
        == 200
    )


def test_existing_and_unknown_names(keyed: TestClient) -> None:
    assert _create(keyed, "homepage", {}).status_code == 201
    again = _create(keyed, "homepage", {})
    assert again.status_code == 409 and "already exists" in again.json()["detail"]
    assert keyed.get(f"{BASE}/nope", headers=ADMIN).status_code == 404
    assert keyed.get(f"{BASE}/nope/history", headers=ADMIN).status_code == 404
    missing = keyed.patch(f"{BASE}/nope", json={"settings": {}, "why": "x"}, headers=ADMIN)
    assert missing.status_code == 404
    bad_name = _create(keyed, "a/b", {})
    assert bad_name.status_code == 422 and bad_name.json()["errors"][0]["field"] == "name"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", BASE, None),
        ("POST", BASE, {"name": "x", "why": "t"}),
        ("GET", f"{BASE}/default", None),
        ("PATCH", f"{BASE}/default", {"settings": {}, "why": "t"}),
        ("POST", f"{BASE}/default/archive", {"why": "t"}),
        ("GET", f"{BASE}/default/history", None),
    ],
)
def test_every_route_needs_the_admin_key(
    keyed: TestClient, method: str, path: str, body: object
) -> None:
    assert keyed.request(method, path, json=body).status_code == 401
    assert keyed.request(method, path, json=body, headers=CLIENT).status_code == 403
    assert _catalog(keyed).find("x") is None
    assert [r.version for r in _catalog(keyed).history("default")] == [1]


def _until(condition: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_watcher_follows_changes_written_elsewhere(keyed: TestClient) -> None:
    """Written to the store by another process (the CLI, another worker): no route here ran."""
    catalog = _catalog(keyed)
    catalog.create("shop", {"reward": {"min": 0, "max": 1}}, by="cli", why="new")

    def ranks() -> bool:
        answer = keyed.post("/v1/rank", json=rank_body(experiment="shop"), headers=CLIENT)
        return answer.status_code == 200

    _until(ranks)
    first = keyed.get("/v1/experiments/shop/model", headers=ADMIN).json()["model_id"]
    changed = catalog.update(
        "shop", {"exploration": {"type": "softmax", "lambda_": 5}}, by="cli", why="softmax"
    )
    _until(
        lambda: (
            keyed.get("/v1/experiments/shop/model", headers=ADMIN).json()["model_id"]
            == changed.fresh_model_id
        )
    )
    served = keyed.get("/v1/experiments/shop/model", headers=ADMIN).json()
    assert served["model_id"] != first and "--softmax" in served["vw_args"]
    assert served["refused"] == [] and served["behind_pointer"] is False
    catalog.archive("shop", by="cli", why="closed")
    _until(
        lambda: (
            keyed.post("/v1/rank", json=rank_body(experiment="shop"), headers=CLIENT).status_code
            == 404
        )
    )
    assert "shop" not in keyed.get("/readyz").json()["models"]


def test_a_damaged_record_leaves_the_worker_serving_what_it_had(keyed: TestClient) -> None:
    catalog = _catalog(keyed)
    assert _create(keyed, "shop", {"reward": {"min": 0, "max": 1}}).status_code == 201
    root = app_settings(keyed).storage.root
    (root / "experiments" / "shop" / "v000002.json").write_bytes(b'{"name": "shop", "vers')
    time.sleep(0.5)  # several polls
    assert (
        keyed.post("/v1/rank", json=rank_body(experiment="shop"), headers=CLIENT).status_code == 200
    )
    refused = keyed.post(
        "/v1/events/e1/reward", json={"value": 3, "experiment": "shop"}, headers=CLIENT
    )
    assert refused.status_code == 422  # the v1 reward range still holds
    # The rest of the catalog is still followed.
    catalog.create("other", {}, by="cli", why="new")
    _until(
        lambda: (
            keyed.post("/v1/rank", json=rank_body(experiment="other"), headers=CLIENT).status_code
            == 200
        )
    )
    shown = keyed.get(f"{BASE}/shop", headers=ADMIN)
    assert shown.status_code == 422 and "unreadable" in shown.json()["detail"]
