"""Outcomes, health, readiness, metrics, the model route and clean segment closing."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from service_helpers import ClientFactory, app_settings, rank_body

from cbloop.settings import Settings
from cbloop_service.app import create_app

ReadLog = Callable[[str], list[dict[str, Any]]]


def test_reward_before_any_decision_is_accepted_and_logged(
    client: TestClient, read_log: ReadLog
) -> None:
    response = client.post(
        "/v1/events/never-ranked/reward", json={"value": 0.5}, headers={"Idempotency-Key": "k-1"}
    )
    assert response.status_code == 202
    assert response.json() == {"event_id": "never-ranked", "kind": "reward"}
    (line,) = read_log("outcomes")
    assert line["EventId"] == "never-ranked"
    assert line["kind"] == "reward"
    assert line["value"] == 0.5
    assert line["idempotency_key"] == "k-1"
    assert line["Timestamp"].endswith("Z")


def test_integer_reward_is_logged_as_a_number(client: TestClient, read_log: ReadLog) -> None:
    assert client.post("/v1/events/e.1:x-y_z/reward", json={"value": -3}).status_code == 202
    (line,) = read_log("outcomes")
    assert line["value"] == -3.0
    assert line["idempotency_key"] is None


def test_activate_logs_an_activation(client: TestClient, read_log: ReadLog) -> None:
    client.post("/v1/rank", json=rank_body(event_id="deferred-1", defer_activation=True))
    response = client.post("/v1/events/deferred-1/activate")
    assert response.status_code == 202
    (line,) = read_log("outcomes")
    assert line["kind"] == "activate"
    assert "value" not in line


def test_healthz_answers(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_reports_models_and_log(client: TestClient) -> None:
    answer = client.get("/readyz")
    assert answer.status_code == 200
    body = answer.json()
    assert body["ready"] is True
    assert body["log_writable"] is True
    assert set(body["models"]) == {"default"}


def test_readyz_is_503_when_the_log_cannot_be_written(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    blocker = settings.storage.root / "events" / "decisions"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the segment folder should be")
    with TestClient(create_app(settings)) as client:
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["log_writable"] is False
        # and a decision that cannot be logged is not answered as made
        failed = client.post("/v1/rank", json=rank_body())
        assert failed.status_code == 503
        assert failed.json()["error"] == "event_log_unavailable"


def _metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} {labels} in metrics")


def test_metrics_expose_requests_latency_model_and_log_counters(client: TestClient) -> None:
    model_id = client.post("/v1/rank", json=rank_body()).json()["model_id"]
    client.post("/v1/rank", json=rank_body(n_actions=0))
    client.post("/v1/events/e1/reward", json={"value": 1})
    text = client.get("/metrics").text
    rank = {"route": "/v1/rank", "method": "POST"}
    assert _metric(text, "cbloop_http_requests_total", status="200", **rank) == 1
    assert _metric(text, "cbloop_http_requests_total", status="422", **rank) == 1
    reward = {"route": "/v1/events/{event_id}/reward", "method": "POST", "status": "202"}
    assert _metric(text, "cbloop_http_requests_total", **reward) == 1
    assert _metric(text, "cbloop_http_request_duration_seconds_count", status="200", **rank) == 1
    assert (
        _metric(
            text, "cbloop_http_request_duration_seconds_bucket", le="+Inf", status="200", **rank
        )
        == 1
    )
    assert _metric(text, "cbloop_model_info", experiment="default", model_id=model_id) == 1
    assert _metric(text, "cbloop_eventlog_lines_written_total", kind="decisions") == 1
    assert _metric(text, "cbloop_eventlog_lines_written_total", kind="outcomes") == 1
    assert _metric(text, "cbloop_eventlog_segments_closed_total", kind="decisions") == 0
    assert _metric(text, "cbloop_worker_info") == 1


def test_unknown_paths_are_counted_under_one_label(client: TestClient) -> None:
    client.get("/no/such/path/1")
    client.get("/no/such/path/2")
    text = client.get("/metrics").text
    assert _metric(text, "cbloop_http_requests_total", route="unmatched", status="404") == 2
    assert "/no/such/path" not in text


def test_model_route_describes_the_serving_model(client: TestClient) -> None:
    model_id = client.post("/v1/rank", json=rank_body()).json()["model_id"]
    info = client.get("/v1/experiments/default/model").json()
    assert info["model_id"] == model_id
    assert info["pointer_model_id"] == model_id
    assert info["vw_args"] == app_settings(client).experiment("default").vw_arguments()
    assert info["state"] == "deployed"
    assert info["refused"] == []
    assert info["loaded_at"].endswith("Z")


def test_model_route_for_unknown_experiment_is_404(client: TestClient) -> None:
    response = client.get("/v1/experiments/nope/model")
    assert response.status_code == 404
    assert "experiment" in response.json()["detail"]


def test_shutdown_closes_every_segment(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    with TestClient(create_app(settings)) as client:
        for i in range(5):
            client.post("/v1/rank", json=rank_body(event_id=f"c{i}"))
            client.post(f"/v1/events/c{i}/reward", json={"value": 1})
    events: Path = settings.storage.root / "events"
    assert list(events.rglob("*.open")) == []
    closed = sorted(p.relative_to(events).parts[0] for p in events.rglob("*.jsonl"))
    assert closed == ["decisions", "outcomes"]
    lines = sum(len(p.read_text().splitlines()) for p in events.rglob("*.jsonl"))
    assert lines == 10


def test_openapi_documents_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {
        "/v1/rank",
        "/v1/events/{event_id}/reward",
        "/v1/events/{event_id}/activate",
        "/v1/experiments/{experiment}/model",
        "/healthz",
        "/readyz",
        "/metrics",
    } <= set(schema["paths"])
    rank = schema["paths"]["/v1/rank"]["post"]
    assert rank["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/RankRequest"
    )
    assert "RankRequest" in schema["components"]["schemas"]
    assert set(schema["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}


def test_second_app_in_the_same_process_has_its_own_metrics(make_client: ClientFactory) -> None:
    first = make_client()
    second = make_client()
    first.post("/v1/rank", json=rank_body())
    assert 'route="/v1/rank"' not in second.get("/metrics").text


def test_rank_answers_only_post(client: TestClient) -> None:
    response = client.get("/v1/rank")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
