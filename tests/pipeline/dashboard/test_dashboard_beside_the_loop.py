"""Reads never block the learning loop, and the loop never breaks the page.

A real `cbloop loop --every 1s` runs on a copy of the simulated deployment while new event
segments keep arriving (so every cycle ingests, joins, trains, evaluates and writes the
warehouse), and a real dashboard server is asked for pages and JSON the whole time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from dashboard_helpers import LiveServer, Simulated

from cbloop.eventlog.layout import is_closed_segment
from cbloop.settings import load_settings
from cbloop_pipeline.dashboard.snapshot import snapshot_path

BATCHES = 5
FEED_EVERY = 2.0
WATCH_SECONDS = 25.0
CBLOOP = str(Path(sys.executable).with_name("cbloop"))
PATHS = ("/", "/experiments/default", "/api/experiments/default/charts/traffic", "/api/overview")


def _deployment_copy(simulated: Simulated, dest: Path) -> Path:
    source = simulated.config.parent
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("pipeline.lock", "*.tmp"))
    config = dest / "config.yaml"
    config.write_text(simulated.config.read_text().replace(str(source), str(dest)))
    return config


def _staged_batches(events: Path, staging: Path) -> list[list[tuple[Path, Path]]]:
    """Copies of every closed segment with fresh event ids, one batch per future arrival."""
    originals = [p for p in sorted(events.rglob("*.jsonl")) if is_closed_segment(p.as_posix())]
    batches = []
    for k in range(BATCHES):
        batch = []
        for seg in originals:
            body = seg.read_bytes().replace(b'"EventId":"', f'"EventId":"b{k}-'.encode())
            staged = staging / f"{k}-{seg.parent.name}-{seg.name}"
            staged.write_bytes(body)
            batch.append((staged, seg.with_name(f"{seg.stem}-b{k}{seg.suffix}")))
        batches.append(batch)
    return batches


def test_the_dashboard_answers_while_the_loop_runs_and_the_loop_never_fails(
    simulated: Simulated, tmp_path: Path
) -> None:
    config = _deployment_copy(simulated, tmp_path / "state")
    settings = load_settings(config, env={})
    staging = tmp_path / "staging"
    staging.mkdir()
    batches = _staged_batches(settings.storage.root / "events", staging)
    snapshot = snapshot_path(settings.warehouse)
    assert not snapshot.exists()

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    loop = subprocess.Popen(
        [CBLOOP, "loop", "--every", "1s", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    stop = threading.Event()

    def feed() -> None:
        for batch in batches:
            if stop.wait(FEED_EVERY):
                return
            for staged, final in batch:
                # As the service closes a segment: written aside, renamed into place.
                shutil.move(staged, final.with_name("." + final.name))
                os.replace(final.with_name("." + final.name), final)

    feeder = threading.Thread(target=feed, daemon=True)
    statuses: list[tuple[str, int]] = []
    cycles: set[int] = set()
    decisions: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not snapshot.exists():
            assert loop.poll() is None, loop.communicate()
            assert time.monotonic() < deadline, "the loop published no snapshot"
            time.sleep(0.1)
        feeder.start()
        with LiveServer(settings, snapshot) as server, httpx.Client(timeout=10) as client:
            end = time.monotonic() + WATCH_SECONDS
            while time.monotonic() < end:
                for path in PATHS:
                    response = client.get(server.url + path)
                    statuses.append((path, response.status_code))
                    if path == "/api/overview" and response.status_code == 200:
                        row = response.json()["experiments"][0]
                        cycles.add(int(row["cycle"]))
                        decisions.add(int(row["last_day"]["decisions"]))
    finally:
        stop.set()
        loop.send_signal(signal.SIGTERM)
        out, err = loop.communicate(timeout=120)
    assert loop.returncode == 0, err
    assert [s for s in statuses if s[1] != 200] == []
    assert len(statuses) > 4 * len(PATHS)
    # The page followed the loop: new cycles, and the arriving decisions, showed up in it.
    assert len(cycles) >= 3, cycles
    assert max(decisions) > min(decisions), decisions
    # Every cycle the loop ran finished, none failed, and every snapshot was published.
    ran = re.findall(r"^default cycle (\d+)", out, flags=re.MULTILINE)
    assert len(ran) >= 3
    assert "failed" not in out and "Traceback" not in err
    assert "snapshot not published" not in err
