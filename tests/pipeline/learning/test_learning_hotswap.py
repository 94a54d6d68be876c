"""Deploying under load against `cbloop serve --workers 2`: the swap loses no request, and a
corrupted model changes nothing but its refusal record."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from cbloop.clock import format_ts
from cbloop.registry import ModelMetadata, ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.learning import deploy_command

POLL_SECONDS = 0.2
#: Time a worker may take, after noticing the pointer, to fetch, load and check a model.
SWAP_MARGIN_SECONDS = 3.0
LOAD_THREADS = 4
STARTUP_TIMEOUT_SECONDS = 60.0
RANK_BODY = {
    "context": {"user": {"seg": "s1", "noise": 0.5}},
    "actions": [{"id": f"a{j}", "features": {"item": {"kind": f"k{j}"}}} for j in range(5)],
}


@dataclass(frozen=True)
class Sample:
    started: float
    ok: bool
    model_id: str | None
    error: str | None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def served(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[Settings, str]]:
    port = _free_port()
    settings = make_settings(service={"model_poll_seconds": POLL_SECONDS, "port": port})
    cbloop = Path(sys.executable).parent / "cbloop"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(cbloop), "serve", "--workers", "2", "--config", str(tmp_path / "config.yaml")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so the workers can be stopped with their parent
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "service did not become ready"
            time.sleep(0.2)
        yield settings, base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


class Load:
    """Threads sending rank requests until stopped, recording every outcome."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run) for _ in range(LOAD_THREADS)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _run(self) -> None:
        # A new connection per request, so that requests spread over both workers.
        with httpx.Client(
            base_url=self.base, timeout=10.0, headers={"Connection": "close"}
        ) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    response = client.post("/v1/rank", json=RANK_BODY)
                    ok = response.status_code == 200
                    sample = Sample(
                        started,
                        ok,
                        response.json().get("model_id") if ok else None,
                        None if ok else f"{response.status_code} {response.text[:200]}",
                    )
                except httpx.HTTPError as exc:
                    sample = Sample(started, False, None, repr(exc))
                with self._lock:
                    self.samples.append(sample)

    def after(self, moment: float) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.started > moment]


def _corrupt_model(registry: ModelRegistry, settings: Settings, tmp_path: Path) -> str:
    garbage = tmp_path / "garbage.vw"
    garbage.write_bytes(os.urandom(4096))
    meta = ModelMetadata(
        model_id=registry.new_model_id(),
        experiment="default",
        vw_args=settings.experiment("default").vw_arguments(),
        created_at=format_ts(),
    )
    registry.save(garbage, meta)
    return meta.model_id


@pytest.mark.slow
def test_deploying_under_load_swaps_without_a_failed_request_and_refuses_a_corrupt_model(
    served: tuple[Settings, str], tmp_path: Path
) -> None:
    settings, base = served
    registry = ModelRegistry(open_store(settings.storage))
    pointer = registry.current("default")
    assert pointer is not None  # serve created the first model
    old_id = pointer.model_id
    new = registry.create_fresh("default", settings.experiment("default"), note="swap test")

    with Load(base) as load:
        time.sleep(1.0)
        swapped_at = time.monotonic()
        assert deploy_command(settings, "default", model_id=new.model_id, force=True).promoted
        time.sleep(POLL_SECONDS + SWAP_MARGIN_SECONDS + 1.0)

        corrupt_id = _corrupt_model(registry, settings, tmp_path)
        corrupted_at = time.monotonic()
        registry.set_current("default", corrupt_id, reason="corruption test")
        time.sleep(POLL_SECONDS + SWAP_MARGIN_SECONDS)
        deadline = time.monotonic() + 10.0
        while registry.metadata("default", corrupt_id).state != "refused":
            assert time.monotonic() < deadline, "the corrupt model was not marked refused"
            time.sleep(0.1)
        time.sleep(0.5)

    failures = [s for s in load.samples if not s.ok]
    assert not failures, failures[:5]
    before = [s for s in load.samples if s.started < swapped_at]
    assert before and {s.model_id for s in before} == {old_id}
    settled = load.after(swapped_at + POLL_SECONDS + SWAP_MARGIN_SECONDS)
    assert settled and {s.model_id for s in settled} == {new.model_id}
    assert all(s.model_id != corrupt_id for s in load.after(corrupted_at))
    # Both workers keep serving the deployed model; only the refusal was recorded.
    refused = registry.metadata("default", corrupt_id)
    assert refused.state == "refused"
    assert registry.metadata("default", new.model_id).state == "deployed"
