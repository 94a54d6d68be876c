"""`cbloop loop --every` is a daemon: a warehouse held by another process does not end it."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from learning_world import write_events

from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.warehouse import connect

# Holds the warehouse read-write (as `cbloop report` or a second pipeline command would) for
# argv[2] seconds; retries while the daemon itself has it open, then says "held".
_HOLDER = textwrap.dedent(
    """
    import sys, time
    import duckdb
    deadline = time.monotonic() + 60
    while True:
        try:
            con = duckdb.connect(sys.argv[1])
            break
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    print("released", flush=True)
    """
)


def _lines(stream: object, into: queue.Queue[str]) -> None:
    for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
        into.put(line.rstrip("\n"))


def _wait_for(lines: queue.Queue[str], seen: list[str], want: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        seen.append(line)
        if want in line:
            return line
    raise AssertionError(f"no {want!r} within {timeout}s; output so far:\n" + "\n".join(seen))


def test_the_daemon_outlives_a_busy_warehouse_and_records_it(
    lsettings: Settings, tmp_path: Path
) -> None:
    ModelRegistry(open_store(lsettings.storage)).ensure_initial_model(
        "default", lsettings.experiment("default")
    )
    write_events(lsettings.storage.root, 400, seed=1)
    daemon = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from cbloop_cli.main import main; main()",
            "loop",
            "--every",
            "1s",
            "--config",
            str(tmp_path / "config.yaml"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "CBLOOP_LOGGING__LEVEL": "WARNING"},
    )
    out: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_lines, args=(daemon.stdout, out), daemon=True).start()
    seen: list[str] = []
    try:
        _wait_for(out, seen, "default cycle 1", timeout=120)
        holder = subprocess.run(
            [sys.executable, "-c", _HOLDER, str(lsettings.warehouse.path), "5"],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert holder.returncode == 0, holder.stderr
        assert "released" in holder.stdout
        # While it was held the daemon failed to connect, said so and kept going ...
        seen += _drain(out)
        assert any("in use by another process" in line for line in seen), seen
        assert daemon.poll() is None, "\n".join(seen)
        # ... and once released it completes a cycle again.
        _wait_for(out, seen, "default cycle", timeout=120)
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
    assert daemon.returncode == 0, "\n".join(seen)

    con = connect(lsettings.warehouse)
    try:
        failures = con.execute(
            "SELECT step, detail FROM loop_steps WHERE status = 'failed' ORDER BY started_at"
        ).fetchall()
        state = con.execute(
            "SELECT status FROM experiment_state WHERE experiment = 'default'"
        ).fetchone()
    finally:
        con.close()
    # The outage is in the step history, recorded once the warehouse was usable again.
    assert failures, "no failure recorded"
    assert all(step == "connect" for step, _ in failures)
    assert all("in use by another process" in detail for _, detail in failures)
    assert state == ("done",)


def _drain(lines: queue.Queue[str]) -> list[str]:
    got = []
    while True:
        try:
            got.append(lines.get_nowait())
        except queue.Empty:
            return got
