"""`cbloop serve --workers 2`: an experiment created over the API serves on every worker,
and one archived stops on every worker, without a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from service_helpers import rank_body
from test_serve_sigkill import _free_port, _ready, _wait, _workers

from cbloop.settings import Settings

ADMIN = {"X-API-Key": "admin-key"}
POLL_SECONDS = 0.2


@pytest.fixture
def two_workers(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    settings = make_settings(
        logging={"level": "WARNING"},
        service={"admin_api_keys": ["admin-key"], "model_poll_seconds": POLL_SECONDS},
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from cbloop_cli.main import main; main()",
            "serve",
            "--workers",
            "2",
            "--port",
            str(port),
            "--config",
            str(tmp_path / "config.yaml"),
        ],
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(
            lambda: proc.poll() is None and _ready(base) and len(_workers(proc.pid)) == 2,
            "2 workers",
        )
        yield base, proc, settings.storage.root
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _serving_workers(base: str, experiment: str, deadline: float) -> set[int]:
    """Pids of the workers whose model route serves `experiment`, asked on new connections
    (the kernel spreads them over both workers) until both do or the deadline passes."""
    serving: set[int] = set()
    while time.monotonic() < deadline and len(serving) < 2:
        response = httpx.get(f"{base}/v1/experiments/{experiment}/model", headers=ADMIN)
        if response.status_code == 200:
            serving.add(response.json()["worker_pid"])
        time.sleep(0.02)
    return serving


@pytest.mark.slow
def test_experiment_created_over_the_api_serves_on_every_worker(
    two_workers: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, proc, root = two_workers
    workers = _workers(proc.pid)
    before = httpx.post(f"{base}/v1/rank", json=rank_body(experiment="homepage"))
    assert before.status_code == 404

    created = httpx.post(
        f"{base}/v1/admin/experiments",
        json={
            "name": "homepage",
            "settings": {"exploration": {"type": "egreedy", "epsilon": 0.3}},
            "why": "new page",
        },
        headers=ADMIN,
    )
    assert created.status_code == 201, created.text

    serving = _serving_workers(base, "homepage", time.monotonic() + 20 * POLL_SECONDS + 5)
    assert serving == workers

    for i in range(60):
        answer = httpx.post(
            f"{base}/v1/rank", json=rank_body(experiment="homepage", event_id=f"h-{i}")
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["experiment"] == "homepage"
    writers = set()
    for path in (root / "events" / "decisions").rglob("*.jsonl*"):
        for raw in path.read_bytes().splitlines():
            if raw and orjson.loads(raw)["experiment"] == "homepage":
                writers.add(path.name.split("-")[1])
    assert writers == {str(p) for p in workers}, "both workers logged homepage decisions"

    archived = httpx.post(
        f"{base}/v1/admin/experiments/homepage/archive", json={"why": "done"}, headers=ADMIN
    )
    assert archived.status_code == 200
    time.sleep(POLL_SECONDS * 10)
    statuses = {
        httpx.post(f"{base}/v1/rank", json=rank_body(experiment="homepage")).status_code
        for _ in range(40)
    }
    assert statuses == {404}
    assert _workers(proc.pid) == workers, "no worker was restarted"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
