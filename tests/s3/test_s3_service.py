"""The real service on the S3 backend: shipping, an S3 outage, and a pointer swap."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage.s3 import S3Store

from .conftest import MotoS3, S3SettingsFactory

service_app = pytest.importorskip("cbloop_service.app")

WAIT_S = 30.0


def rank_body(event_id: str) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "context": {"user": {"city": "paris", "age": 31}},
        "actions": [
            {"id": "sports", "features": {"topic": {"name": "sports"}}},
            {"id": "politics", "features": {"topic": {"name": "politics"}}},
            {"id": "music", "features": {"topic": {"name": "music"}}},
        ],
    }


def wait_until(condition: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def spooled(root: Path) -> list[Path]:
    return sorted((root / "events").rglob("*.jsonl"))


def shipped_event_ids(store: S3Store, kind: str) -> list[str]:
    ids: list[str] = []
    for info in store.list(f"events/{kind}/"):
        for line in store.get_bytes(info.key).splitlines():
            ids.append(orjson.loads(line)["EventId"])
    return ids


@pytest.fixture
def service_settings(make_s3_settings: S3SettingsFactory) -> Callable[..., Settings]:
    def factory(server: MotoS3 | None = None) -> Settings:
        return make_s3_settings(
            server=server,
            eventlog={"segment_max_seconds": 0.2, "fsync": "never"},
            service={"model_poll_seconds": 0.1},
        )

    return factory


@pytest.fixture
def client_for() -> Iterator[Callable[[Settings], TestClient]]:
    clients: list[TestClient] = []

    def open_client(settings: Settings) -> TestClient:
        client = TestClient(service_app.create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.__exit__(None, None, None)


def test_the_service_ships_closed_segments_and_leaves_no_spool_behind(
    service_settings: Callable[..., Settings],
) -> None:
    settings = service_settings()
    with TestClient(service_app.create_app(settings)) as client:
        for n in range(20):
            assert client.post("/v1/rank", json=rank_body(f"e-{n}")).status_code == 200
        for n in range(0, 20, 2):
            reward = client.post(f"/v1/events/e-{n}/reward", json={"value": 1.0})
            assert reward.status_code < 300

    store = S3Store.from_settings(settings.storage.s3)
    assert sorted(shipped_event_ids(store, "decisions")) == sorted(f"e-{n}" for n in range(20))
    assert sorted(shipped_event_ids(store, "outcomes")) == sorted(f"e-{n}" for n in range(0, 20, 2))
    assert spooled(settings.storage.root) == []
    # The registry lives in the bucket, not in the local folder.
    assert store.stat("models/default/current") is not None
    assert not (settings.storage.root / "models").exists()


def test_ranking_never_fails_while_s3_is_down_and_segments_ship_when_it_returns(
    service_settings: Callable[..., Settings],
    outage_server: MotoS3,
    client_for: Callable[[Settings], TestClient],
) -> None:
    settings = service_settings(server=outage_server)
    client = client_for(settings)
    shipper = client.app.state.service.shipper  # type: ignore[attr-defined]
    assert shipper is not None
    ranked: list[str] = []

    def rank_some(count: int) -> None:
        for _ in range(count):
            event_id = f"e-{len(ranked)}"
            response = client.post("/v1/rank", json=rank_body(event_id))
            assert response.status_code == 200, response.text
            ranked.append(event_id)
            time.sleep(0.01)  # spread ranks over several segments

    rank_some(10)
    assert wait_until(lambda: shipper.shipped >= 1)

    outage_server.stop()
    rank_some(60)
    assert wait_until(lambda: shipper.failed_attempts >= 1)
    assert wait_until(lambda: len(spooled(settings.storage.root)) >= 2)
    rank_some(10)
    assert client.get("/readyz").status_code == 200

    outage_server.start()
    rank_some(10)
    assert wait_until(lambda: spooled(settings.storage.root) == [] and shipper.pending == 0)
    store = S3Store.from_settings(settings.storage.s3)
    assert wait_until(lambda: len(shipped_event_ids(store, "decisions")) == len(ranked))
    assert sorted(shipped_event_ids(store, "decisions")) == sorted(ranked)


def test_a_pointer_swap_in_the_bucket_reaches_the_running_service(
    service_settings: Callable[..., Settings], client_for: Callable[[Settings], TestClient]
) -> None:
    settings = service_settings()
    client = client_for(settings)
    first = client.post("/v1/rank", json=rank_body("before")).json()["model_id"]

    registry = ModelRegistry(S3Store.from_settings(settings.storage.s3))
    fresh = registry.create_fresh("default", settings.experiment("default"), note="swap test")
    registry.set_current("default", fresh.model_id, reason="swap test")

    def serving() -> str:
        return str(client.get("/v1/experiments/default/model").json()["model_id"])

    assert wait_until(lambda: serving() == fresh.model_id)
    assert fresh.model_id != first
    assert client.post("/v1/rank", json=rank_body("after")).json()["model_id"] == fresh.model_id


# -- the deployed shape: `cbloop serve` with two worker processes --------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cbloop_command() -> list[str]:
    script = Path(sys.executable).with_name("cbloop")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cbloop_cli.main import main; main()"]


@pytest.mark.slow
def test_cbloop_serve_with_two_workers_swaps_models_and_ships_on_shutdown(
    make_s3_settings: S3SettingsFactory, tmp_path: Path
) -> None:
    port = free_port()
    settings = make_s3_settings(
        eventlog={"segment_max_seconds": 600},  # only the shutdown closes these segments
        service={"host": "127.0.0.1", "port": port, "workers": 2, "model_poll_seconds": 0.2},
    )
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [*cbloop_command(), "serve", "--config", str(tmp_path / "config.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
        start_new_session=True,
    )

    def all_workers_started() -> bool:
        # Every worker is up before the swap, so each one must see it by its own polling.
        started = (tmp_path / "serve.log").read_text().count("Application startup complete")
        return started == 2 or server.poll() is not None

    try:
        assert wait_until(all_workers_started, timeout=60.0)
        assert server.poll() is None, (tmp_path / "serve.log").read_text()
        store = S3Store.from_settings(settings.storage.s3)
        registry = ModelRegistry(store)
        fresh = registry.create_fresh("default", settings.experiment("default"), note="swap")
        registry.set_current("default", fresh.model_id, reason="swap test")

        ranked: list[str] = []

        def ranks_use_the_new_model() -> bool:
            # New connections each time, so both workers get a share of the requests.
            answers = []
            for _ in range(8):
                event_id = f"e-{len(ranked)}"
                response = httpx.post(f"{base}/v1/rank", json=rank_body(event_id), timeout=5.0)
                assert response.status_code == 200, response.text
                ranked.append(event_id)
                answers.append(response.json()["model_id"])
            return all(model_id == fresh.model_id for model_id in answers)

        assert wait_until(ranks_use_the_new_model)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()

    assert server.returncode == 0, (tmp_path / "serve.log").read_text()
    assert spooled(settings.storage.root) == []
    assert sorted(shipped_event_ids(store, "decisions")) == sorted(ranked)
