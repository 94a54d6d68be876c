"""API keys (401/403) and the configured caps on actions and features (422)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from service_helpers import ClientFactory, logged, rank_body

CLIENT_KEY = "client-key-123"
ADMIN_KEY = "admin-key-456"


@pytest.fixture
def keyed(make_client: ClientFactory) -> TestClient:
    return make_client(service={"api_keys": [CLIENT_KEY], "admin_api_keys": [ADMIN_KEY]})


CLIENT_ROUTES = [
    ("/v1/rank", rank_body()),
    ("/v1/events/e1/reward", {"value": 1.0}),
    ("/v1/events/e1/activate", None),
]


@pytest.mark.parametrize(("path", "body"), CLIENT_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}],
)
def test_client_routes_need_a_valid_key(
    keyed: TestClient, path: str, body: object, headers: dict[str, str]
) -> None:
    response = keyed.post(path, json=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    root = keyed.app.state.service.settings.storage.root  # type: ignore[attr-defined]
    assert logged(root, "decisions") == logged(root, "outcomes") == []


@pytest.mark.parametrize(("path", "body"), CLIENT_ROUTES)
@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": CLIENT_KEY},
        {"Authorization": f"Bearer {CLIENT_KEY}"},
        {"X-API-Key": ADMIN_KEY},
    ],
)
def test_client_routes_accept_client_and_admin_keys(
    keyed: TestClient, path: str, body: object, headers: dict[str, str]
) -> None:
    assert keyed.post(path, json=body, headers=headers).status_code in (200, 202)


@pytest.mark.parametrize("path", ["/v1/experiments/default/model", "/metrics"])
def test_admin_routes_need_the_admin_key(keyed: TestClient, path: str) -> None:
    assert keyed.get(path).status_code == 401
    assert keyed.get(path, headers={"X-API-Key": "wrong"}).status_code == 401
    assert keyed.get(path, headers={"X-API-Key": CLIENT_KEY}).status_code == 403
    assert keyed.get(path, headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 200


def test_health_and_readiness_need_no_key(keyed: TestClient) -> None:
    assert keyed.get("/healthz").status_code == 200
    assert keyed.get("/readyz").status_code == 200


def test_without_keys_configured_every_route_is_open(client: TestClient) -> None:
    assert client.post("/v1/rank", json=rank_body()).status_code == 200
    assert client.get("/v1/experiments/default/model").status_code == 200


def test_client_keys_alone_also_guard_admin_routes(make_client: ClientFactory) -> None:
    client = make_client(service={"api_keys": [CLIENT_KEY]})
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"X-API-Key": CLIENT_KEY}).status_code == 200


def test_too_many_actions_is_refused(make_client: ClientFactory) -> None:
    client = make_client(service={"max_actions": 3})
    response = client.post("/v1/rank", json=rank_body(n_actions=4))
    assert response.status_code == 422
    assert "actions" in response.json()["detail"]
    assert "at most 3" in response.json()["detail"]
    assert client.post("/v1/rank", json=rank_body(n_actions=3)).status_code == 200


def test_too_many_features_is_refused(make_client: ClientFactory) -> None:
    # rank_body(2): 3 context features + 2 per action = 7
    client = make_client(service={"max_features": 6})
    response = client.post("/v1/rank", json=rank_body(n_actions=2))
    assert response.status_code == 422
    assert "7 features" in response.json()["detail"]
    root = client.app.state.service.settings.storage.root  # type: ignore[attr-defined]
    assert logged(root, "decisions") == []


def test_body_limit_follows_settings(make_client: ClientFactory) -> None:
    client = make_client(service={"max_body_bytes": 200})
    assert client.post("/v1/rank", json=rank_body(n_actions=1)).status_code == 200
    assert client.post("/v1/rank", json=rank_body(n_actions=4)).status_code == 413
