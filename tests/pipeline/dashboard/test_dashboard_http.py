"""The dashboard's HTTP edge: admin keys, read-only routes, errors that name the problem.

Against the real app and its lifespan, over a snapshot published from a real (empty,
migrated) warehouse file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cbloop.settings import Settings
from cbloop_pipeline.dashboard.app import COOKIE, create_app
from cbloop_pipeline.dashboard.snapshot import current_snapshot, publish, snapshot_path

ADMIN = "admin-key-1"


@pytest.fixture
def keyed(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(service={"admin_api_keys": [ADMIN]})
    publish(settings)
    with TestClient(create_app(settings), follow_redirects=False) as client:
        yield client


@pytest.fixture
def open_client(settings: Settings) -> Iterator[TestClient]:
    publish(settings)
    with TestClient(create_app(settings)) as client:
        yield client


def test_with_admin_keys_every_page_and_api_needs_one(keyed: TestClient) -> None:
    for path in ("/", "/experiments/default", "/api/overview", "/static/dash.js"):
        assert keyed.get(path).status_code == 401, path
        assert keyed.get(path, headers={"X-API-Key": "wrong"}).status_code == 403, path
        assert keyed.get(path, headers={"X-API-Key": ADMIN}).status_code == 200, path
        bearer = {"Authorization": f"Bearer {ADMIN}"}
        assert keyed.get(path, headers=bearer).status_code == 200, path
    assert keyed.get("/healthz").status_code == 200
    body = keyed.get("/api/overview").json()
    assert body["error"] == "Unauthorized" and "X-API-Key" in body["detail"]
    assert "admin key" in keyed.get("/").text  # the login form


def test_a_login_key_sets_a_cookie_and_drops_the_key_from_the_address(keyed: TestClient) -> None:
    response = keyed.get("/experiments/default", params={"key": ADMIN, "x": "1"})
    assert response.status_code == 303
    assert response.headers["location"] == "/experiments/default?x=1"
    assert COOKIE in response.cookies
    assert keyed.get("/experiments/default").status_code == 200  # the cookie now
    assert keyed.get("/", params={"key": "nope"}).status_code == 403


def test_the_dashboard_is_read_only(open_client: TestClient) -> None:
    for method in ("post", "put", "delete", "patch"):
        assert getattr(open_client, method)("/api/overview").status_code == 405
        assert getattr(open_client, method)("/experiments/default").status_code == 405


def test_unknown_names_get_a_clear_4xx(open_client: TestClient) -> None:
    missing = open_client.get("/api/experiments/nosuch")
    assert missing.status_code == 404 and "nosuch" in missing.json()["detail"]
    page = open_client.get("/experiments/nosuch")
    assert page.status_code == 404 and "unknown experiment" in page.text
    model = open_client.get("/api/experiments/default/models/m-nope")
    assert model.status_code == 404 and "m-nope" in model.json()["detail"]
    chart = open_client.get("/api/experiments/default/charts/pie")
    assert chart.status_code == 400 and "traffic" in chart.json()["detail"]


def test_an_empty_warehouse_renders_every_page_with_no_data_yet(open_client: TestClient) -> None:
    overview: dict[str, Any] = open_client.get("/api/overview").json()
    assert [e["name"] for e in overview["experiments"]] == ["default"]
    assert overview["experiments"][0]["warnings"][0]["code"] == "loop_never_ran"
    page = open_client.get("/experiments/default")
    assert page.status_code == 200
    assert page.text.count("no data yet") == page.text.count('class="chart"')
    assert "no holdout configured" in page.text


def test_before_any_snapshot_pages_answer_503_saying_why(settings: Settings) -> None:
    assert current_snapshot(snapshot_path(settings.warehouse)) is None
    with TestClient(create_app(settings)) as client:
        page = client.get("/")
        assert page.status_code == 503 and "cbloop loop" in page.text
        api = client.get("/api/overview")
        assert api.status_code == 503 and api.json()["error"] == "SnapshotMissing"
