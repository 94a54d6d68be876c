"""The simulated deployment's own state: a folder with a config.yaml, event store and warehouse.

Each run starts from an empty folder so that no model, event or join of an earlier run can
leak into its numbers. A marker file tells a folder we made (and may wipe) from anything else.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from cbloop.errors import InvalidInput
from cbloop.eventlog.layout import OPEN_SUFFIX
from cbloop.settings import Settings, load_settings

logger = logging.getLogger(__name__)

MARKER = ".cbloop-simulation"
CONFIG_FILE = "config.yaml"
#: Segments close this soon after their first line, so a round's events reach the pipeline
#: within about a second of its last reward.
SEGMENT_SECONDS = 0.5
#: The service checks the model pointer this often, which bounds the wait for a new model.
MODEL_POLL_SECONDS = 0.2


class StateError(InvalidInput):
    """The state folder cannot be used (exists and was not made by a simulation)."""


def fresh_state_dir(path: Path) -> Path:
    """An empty folder at `path`; an earlier simulation's folder there is wiped first."""
    if path.exists():
        if not (path / MARKER).exists() and any(path.iterdir()):
            raise StateError(
                f"{path} exists and is not a simulation state folder; choose another --out"
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by cbloop simulate; wiped by the next run\n")
    return path


def simulation_config(
    state: Path, experiment: str, experiment_settings: dict[str, Any], *, log_level: str
) -> dict[str, Any]:
    """The config.yaml contents of a simulated deployment rooted at `state`."""
    data = state / "data"
    return {
        "storage": {"backend": "local", "root": str(data)},
        "warehouse": {"path": str(data / "warehouse.duckdb")},
        "eventlog": {"segment_max_seconds": SEGMENT_SECONDS, "fsync": "interval"},
        "service": {"host": "127.0.0.1", "model_poll_seconds": MODEL_POLL_SECONDS},
        "pipeline": {"lock_path": str(state / "pipeline.lock")},
        "logging": {"level": log_level, "format": "text"},
        "experiments": {experiment: experiment_settings},
    }


def write_config(state: Path, config: dict[str, Any]) -> tuple[Path, Settings]:
    path = state / CONFIG_FILE
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    # env={}: the simulated deployment must not pick up CBLOOP_* overrides meant for another.
    return path, load_settings(path, env={})


def open_segments(root: Path) -> list[Path]:
    events = root / "events"
    if not events.exists():
        return []
    return sorted(events.rglob(f"*{OPEN_SUFFIX}"))


def wait_segments_closed(root: Path, timeout: float) -> float:
    """Until every segment open now under `root` is closed; returns the seconds waited.

    Called once a round's requests have all been answered, so each of its lines is in a
    segment open now or already closed. Segments opened later (other clients of a --url
    service) do not hold us up; the writers close ours by age.
    """
    started = time.monotonic()
    deadline = started + timeout
    pending = open_segments(root)
    while pending:
        pending = [p for p in pending if p.exists()]
        if not pending:
            break
        if time.monotonic() >= deadline:
            raise StateError(
                f"{len(pending)} event segment(s) still open after {timeout:.0f}s, "
                f"e.g. {pending[0]}"
            )
        time.sleep(0.05)
    return time.monotonic() - started
