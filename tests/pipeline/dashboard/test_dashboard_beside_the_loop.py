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
import pytest
from crafted_segments import T0, decision, reward
from dashboard_helpers import LiveServer, Simulated

from cbloop.clock import utcnow_naive
from cbloop.settings import load_settings
from cbloop_pipeline.dashboard.snapshot import KEEP, current_snapshot, snapshot_path

# The first test of a session also runs the seeded simulation (about a minute or two).
pytestmark = pytest.mark.timeout(600)

BATCHES = 3
PER_BATCH = 150
FEED_EVERY = 2.0
WATCH_SECONDS = 180.0
CBLOOP = str(Path(sys.executable).with_name("cbloop"))
PATHS = ("/", "/experiments/default", "/api/experiments/default/charts/traffic", "/api/overview")


def _deployment_copy(simulated: Simulated, dest: Path) -> Path:
    source = simulated.config.parent
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("pipeline.lock", "*.tmp"))
    config = dest / "config.yaml"
    config.write_text(simulated.config.read_text().replace(str(source), str(dest)))
    return config


def _arrive(root: Path, batch: int) -> None:
    """One batch of fresh traffic, as the service writes it: decisions with their rewards,
    each segment written aside and renamed into place when closed."""
    moment = utcnow_naive()
    now = (moment - T0).total_seconds()
    ids = [f"feed{batch}-{i:04d}" for i in range(PER_BATCH)]
    lines = {
        "decisions": [
            decision(e, now + i * 0.001, chosen=i % 3, p_chosen=0.6, sample_prob=(i % 10) / 10)
            for i, e in enumerate(ids)
        ],
        "outcomes": [reward(e, now + 0.1 + i * 0.001, float(i % 2)) for i, e in enumerate(ids)],
    }
    for kind, body in lines.items():
        folder = root / "events" / kind / f"date={moment:%Y-%m-%d}" / f"hour={moment:%H}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / f"feeder-1-{batch}-000001.jsonl"
        aside = folder / f".{final.name}"
        aside.write_text("".join(line + "\n" for line in body), encoding="utf-8")
        os.replace(aside, final)


def test_the_dashboard_answers_while_the_loop_runs_and_the_loop_never_fails(
    simulated: Simulated, tmp_path: Path
) -> None:
    config = _deployment_copy(simulated, tmp_path / "state")
    settings = load_settings(config, env={})
    snapshot = snapshot_path(settings.warehouse)
    assert current_snapshot(snapshot) is None

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out_file, err_file = tmp_path / "loop.out", tmp_path / "loop.err"
    with out_file.open("w") as stdout, err_file.open("w") as stderr:
        loop = subprocess.Popen(
            [CBLOOP, "loop", "--every", "1s", "--config", str(config)],
            stdout=stdout,
            stderr=stderr,
            env=env,
        )
    stop = threading.Event()

    def feed() -> None:
        for batch in range(BATCHES):
            if stop.wait(FEED_EVERY):
                return
            _arrive(settings.storage.root, batch)

    feeder = threading.Thread(target=feed, daemon=True)
    statuses: list[tuple[str, int]] = []
    cycles: set[int] = set()
    decisions: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while current_snapshot(snapshot) is None:
            assert loop.poll() is None, err_file.read_text()
            assert time.monotonic() < deadline, "the loop published no snapshot"
            time.sleep(0.1)
        with LiveServer(settings, snapshot) as server, httpx.Client(timeout=10) as client:
            # What the page shows before the new traffic arrives.
            first = client.get(server.url + "/api/overview").json()["experiments"][0]
            decisions.add(int(first["last_day"]["decisions"]))
            feeder.start()
            # Until the page has shown three cycles and the arriving decisions (a cycle that
            # trains and evaluates takes seconds on a busy machine), or the time is up.
            end = time.monotonic() + WATCH_SECONDS
            while time.monotonic() < end and not (
                len(cycles) >= 3
                and len(decisions) > 1
                and max(decisions) - min(decisions) >= BATCHES * PER_BATCH
            ):
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
        loop.wait(timeout=120)
    out, err = out_file.read_text(), err_file.read_text()
    assert loop.returncode == 0, err
    assert [s for s in statuses if s[1] != 200] == []
    assert len(statuses) > 4 * len(PATHS)
    # The page followed the loop: new cycles, and the arriving decisions, showed up in it.
    assert len(cycles) >= 3, (cycles, out)
    assert max(decisions) - min(decisions) == BATCHES * PER_BATCH, decisions
    assert min(decisions) == simulated.loops * simulated.per_loop
    # Every cycle the loop ran finished, none failed, and every snapshot was published.
    ran = re.findall(r"^default cycle (\d+)", out, flags=re.MULTILINE)
    assert len(ran) >= 3
    assert "failed" not in out and "Traceback" not in err
    assert "snapshot not published" not in err
    # Old snapshots are removed as new ones come; the newest few stay.
    assert 1 <= len(list(snapshot.glob("snapshot-*.duckdb"))) <= KEEP
