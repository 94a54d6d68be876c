"""The simulated deployment's folder, config and the wait for closed segments."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cbloop_pipeline.simulate.state import (
    MARKER,
    StateError,
    fresh_state_dir,
    open_segments,
    simulation_config,
    wait_segments_closed,
    write_config,
)


def test_state_folder_is_wiped_only_when_a_simulation_made_it(tmp_path: Path) -> None:
    state = fresh_state_dir(tmp_path / "state")
    (state / "leftover").write_text("old run")
    assert (state / MARKER).exists()
    state = fresh_state_dir(tmp_path / "state")
    assert not (state / "leftover").exists()

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious").write_text("keep")
    with pytest.raises(StateError, match="not a simulation state folder"):
        fresh_state_dir(foreign)
    assert (foreign / "precious").exists()


def test_generated_config_is_valid_settings_rooted_in_the_state_folder(tmp_path: Path) -> None:
    state = fresh_state_dir(tmp_path / "state")
    config = simulation_config(
        state,
        "sim",
        {"vw_args": "--interactions bA -b 18", "reward": {"wait_seconds": 1.0}},
        log_level="WARNING",
    )
    path, settings = write_config(state, config)
    assert path.parent == state
    assert settings.storage.root == state / "data"
    assert settings.warehouse.path.parent == state / "data"
    assert settings.experiment("sim").reward.wait_seconds == 1.0
    assert "default" in settings.experiments
    assert settings.eventlog.segment_max_seconds < 5


def test_waiting_for_segments_returns_once_the_open_ones_are_closed(tmp_path: Path) -> None:
    segment = tmp_path / "events" / "decisions" / "date=2026-01-01" / "hour=00"
    segment.mkdir(parents=True)
    open_file = segment / "w-000001.jsonl.open"
    open_file.write_text('{"EventId": "e"}\n')
    assert open_segments(tmp_path) == [open_file]

    timer = threading.Timer(0.2, lambda: open_file.rename(segment / "w-000001.jsonl"))
    timer.start()
    try:
        wait_segments_closed(tmp_path, timeout=10)
    finally:
        timer.join()
    assert open_segments(tmp_path) == []


def test_waiting_for_segments_gives_up_naming_the_open_one(tmp_path: Path) -> None:
    segment = tmp_path / "events" / "outcomes"
    segment.mkdir(parents=True)
    (segment / "w-000002.jsonl.open").write_text("")
    with pytest.raises(StateError, match="still open"):
        wait_segments_closed(tmp_path, timeout=0.1)
