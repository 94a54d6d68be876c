"""`cbloop serve --workers 2`: one scrape of /metrics counts both workers' requests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import rank_body
from test_serve_sigkill import _free_port, _ready, _wait, _workers

from cbloop.settings import Settings

N_RANKS = 120


def _sample(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


@pytest.fixture
def two_workers(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path, Path]]:
    settings = make_settings(logging={"level": "WARNING"})
    scratch = tmp_path / "tmp"
    scratch.mkdir()
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
        env={**os.environ, "TMPDIR": str(scratch)},
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(
            lambda: proc.poll() is None and _ready(base) and len(_workers(proc.pid)) == 2,
            "2 workers",
        )
        yield base, proc, settings.storage.root, scratch
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_one_scrape_sees_every_workers_requests(
    two_workers: tuple[str, subprocess.Popen[bytes], Path, Path],
) -> None:
    base, proc, root, scratch = two_workers
    (metrics_dir,) = [p for p in scratch.iterdir() if p.name.startswith("cbloop-metrics-")]
    for i in range(N_RANKS):
        # A new connection each time: the kernel spreads them over both workers' accepts.
        assert httpx.post(f"{base}/v1/rank", json=rank_body(event_id=f"m-{i}")).status_code == 200
    writers = {p.name.split("-")[1] for p in (root / "events" / "decisions").rglob("*.jsonl*")}
    assert len(writers) == 2, "both workers answered ranks"

    rank = {"route": "/v1/rank", "method": "POST", "status": "200"}

    def complete(text: str) -> bool:
        # Each worker copies its counts to the shared files every second (and the one
        # answering the scrape just before it), so a second scrape at most sees them all.
        return (
            _sample(text, "cbloop_http_requests_total", **rank) == N_RANKS
            and _sample(text, "cbloop_eventlog_lines_written_total", kind="decisions") == N_RANKS
        )

    deadline = time.monotonic() + 10
    text = httpx.get(f"{base}/metrics").text
    while not complete(text):
        assert time.monotonic() < deadline, text
        time.sleep(0.2)
        text = httpx.get(f"{base}/metrics").text
    assert _sample(text, "cbloop_http_request_duration_seconds_count", **rank) == N_RANKS
    assert _sample(text, "cbloop_http_requests_total", **rank) == N_RANKS  # never more
    pids = set(re.findall(r'^cbloop_worker_info{pid="(\d+)"} 1\.0$', text, re.M))
    assert pids == {str(pid) for pid in _workers(proc.pid)}

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert not metrics_dir.exists(), "cbloop serve removes its metrics folder"
