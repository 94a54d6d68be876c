"""A damaged warehouse file: one clear line from every command, and a rebuild from the event
log that gives back the same joins and report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from crafted_segments import EventLogFolder, Pipeline, at, decision, iso, reward

from cbloop.registry import ModelRegistry
from cbloop.storage import LocalStore


def _cbloop(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from cbloop_cli.main import main; main()",
            *args,
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "CBLOOP_LOGGING__LEVEL": "ERROR"},
    )


def _damage(path: Path, how: str) -> None:
    if how == "truncated":
        # The headers survive, the blocks they point to do not (a copy cut short).
        os.truncate(path, 16384)
    else:
        path.write_bytes(b"\x00not a database\x00" * 4096)


@pytest.mark.parametrize("how", ["truncated", "overwritten"])
def test_a_damaged_warehouse_is_one_clear_error_and_rebuilds_from_the_event_log(
    wh: Pipeline, event_log: EventLogFolder, tmp_path: Path, how: str
) -> None:
    config = tmp_path / "config.yaml"
    ModelRegistry(LocalStore(wh.settings.storage.root)).ensure_initial_model(
        "default", wh.settings.experiment("default")
    )
    event_log.decisions(*(decision(f"e{i}", i, chosen=i % 3) for i in range(40)))
    event_log.outcomes(*(reward(f"e{i}", i + 2, 1.0) for i in range(0, 40, 2)))
    event_log.decisions(*(decision(f"f{i}", 2000 + i) for i in range(10)))
    for step in (
        ("ingest",),
        ("join", "--as-of", iso(at(1500))),
        ("join", "--as-of", iso(at(4000))),
    ):
        done = _cbloop(config, *step)
        assert done.returncode == 0, done.stderr
    before = _cbloop(config, "report", "--by", "experiment", "--format", "json")
    assert before.returncode == 0, before.stderr
    joins_before = wh.query("SELECT join_id, joined, train_events FROM join_jobs ORDER BY 1")
    assert len(joins_before) == 2

    path = wh.settings.warehouse.path
    _damage(path, how)

    for command in (("migrate",), ("report",), ("loop", "--once")):
        failed = _cbloop(config, *command)
        assert failed.returncode == 1, (command, failed.stdout, failed.stderr)
        assert "Traceback" not in failed.stderr
        lines = failed.stderr.strip().splitlines()
        assert len(lines) == 1, (command, failed.stderr)
        assert str(path) in lines[0]
        assert "cbloop rebuild-warehouse" in lines[0] and "restore" in lines[0]

    rebuilt = _cbloop(config, "rebuild-warehouse")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "2 joins replayed" in rebuilt.stdout
    aside = list(path.parent.glob(f"{path.name}.damaged-*"))
    assert len(aside) == 1 and f"moved aside: {aside[0]}" in rebuilt.stdout

    # Same joins under the same ids (models' records of what they learned stay true), same
    # figures, and the registry mirrored again.
    assert (
        wh.query("SELECT join_id, joined, train_events FROM join_jobs ORDER BY 1") == joins_before
    )
    after = _cbloop(config, "report", "--by", "experiment", "--format", "json")
    assert after.returncode == 0, after.stderr
    assert orjson.loads(after.stdout) == orjson.loads(before.stdout)
    assert wh.query("SELECT count(*) FROM models") == [(1,)]
    # A healthy warehouse is not rebuilt by accident.
    again = _cbloop(config, "rebuild-warehouse")
    assert again.returncode != 0 and "reads fine" in again.stderr
