"""`cbloop serve --workers 2` under load: a SIGKILLed worker loses no acknowledged line.

A 2xx means the line reached the OS, so killing the process right after cannot lose it;
the replacement worker uvicorn starts closes the dead worker's orphan segment, and SIGTERM
closes the rest cleanly.
"""

from __future__ import annotations

import collections
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from service_helpers import rank_body

from cbloop.settings import Settings

START_DEADLINE_S = 90.0
LOAD_THREADS = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _workers(master: int) -> set[int]:
    """uvicorn's worker processes: the master's children started by multiprocessing spawn."""
    found = set()
    for task in Path(f"/proc/{master}/task").iterdir():
        children = (task / "children").read_text().split()
        for pid in map(int, children):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except FileNotFoundError:
                continue
            if b"spawn_main" in cmdline:
                found.add(pid)
    return found


def _wait(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


@pytest.fixture
def server(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    settings = make_settings(
        logging={"level": "WARNING"},
        eventlog={"segment_max_seconds": 1.0},  # several segments per worker during the run
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


def _closed_event_ids(root: Path, kind: str) -> collections.Counter[str]:
    ids: collections.Counter[str] = collections.Counter()
    for path in (root / "events" / kind).rglob("*.jsonl"):
        for raw in path.read_bytes().splitlines():
            ids[orjson.loads(raw)["EventId"]] += 1
    return ids


@pytest.mark.slow
def test_sigkilled_worker_loses_no_acknowledged_line(
    server: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    base, proc, root = server
    master = proc.pid
    acked_decisions: list[str] = []
    acked_rewards: list[str] = []
    stop = threading.Event()
    counter = itertools.count()

    def load() -> None:
        with httpx.Client(base_url=base, timeout=5.0) as client:
            while not stop.is_set():
                event_id = f"k-{next(counter)}"
                try:
                    r = client.post("/v1/rank", json=rank_body(event_id=event_id))
                    if r.status_code == 200:
                        acked_decisions.append(event_id)
                    r = client.post(f"/v1/events/{event_id}/reward", json={"value": 1.0})
                    if r.status_code == 202:
                        acked_rewards.append(event_id)
                except httpx.TransportError:
                    continue  # the killed worker's connections: not acknowledged

    threads = [threading.Thread(target=load) for _ in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    try:
        _wait(lambda: len(acked_decisions) > 200, "load to build up")
        before = _workers(master)
        victim = min(before)
        # Under load the victim always has open segments: they become the orphans.
        orphans = [p for p in (root / "events").rglob("*.open") if f"-{victim}-" in p.name]
        os.kill(victim, signal.SIGKILL)
        # uvicorn's supervisor replaces the dead worker; keep the load on until it serves.
        _wait(lambda: len(_workers(master) - before) == 1, "a replacement worker")
        served = len(acked_decisions)
        _wait(lambda: len(acked_decisions) > served + 200, "load after the kill")
    finally:
        stop.set()
        for t in threads:
            t.join()

    proc.send_signal(signal.SIGTERM)  # a clean stop closes every open segment
    assert proc.wait(timeout=60) == 0

    assert list((root / "events").rglob("*.open")) == []
    assert orphans
    assert all(p.with_name(p.name.removesuffix(".open")).exists() for p in orphans)
    decisions = _closed_event_ids(root, "decisions")
    rewards = _closed_event_ids(root, "outcomes")
    assert len(acked_decisions) > 400
    assert [e for e in acked_decisions if decisions[e] != 1] == []
    assert [e for e in acked_rewards if rewards[e] != 1] == []
