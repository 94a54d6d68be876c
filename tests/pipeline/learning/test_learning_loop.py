"""`cbloop loop`: the cycle, its recorded state, the lock, and recovery from a kill."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from learning_world import write_events

from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.lock import LockHeld, exclusive_lock
from cbloop_pipeline.loop import CycleReport, run_cycle, run_loop
from cbloop_pipeline.models import lineage
from cbloop_pipeline.warehouse import connect


def _registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(open_store(settings.storage))


def _state(settings: Settings) -> dict[str, Any]:
    con = connect(settings.warehouse)
    try:
        cursor = con.execute("SELECT * FROM experiment_state WHERE experiment = 'default'")
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
    finally:
        con.close()
    assert row is not None
    return dict(zip(names, row, strict=True))


def _train_events_of_joins(settings: Settings) -> dict[str, int]:
    con = connect(settings.warehouse)
    try:
        rows = con.execute("SELECT join_id, train_events FROM join_jobs").fetchall()
    finally:
        con.close()
    return {str(j): int(n) for j, n in rows}


def test_a_cycle_runs_every_step_and_records_the_state(
    lsettings: Settings, cli: Callable[..., Result]
) -> None:
    registry = _registry(lsettings)
    initial = registry.ensure_initial_model("default", lsettings.experiment("default")).model_id
    write_events(lsettings.storage.root, 2000, seed=1)

    result = cli("loop", "--once")
    assert result.exit_code == 0, result.output
    state = _state(lsettings)
    assert (state["cycle"], state["step"], state["status"]) == (1, "idle", "done")
    assert [state[f"{s}_state"] for s in ("ingest", "join", "train", "evaluate", "deploy")] == [
        "done"
    ] * 5
    trained = state["last_trained_model_id"]
    assert trained is not None and trained != initial
    assert state["last_evaluated_model_id"] == trained
    assert state["deployed_model_id"] == trained  # beats the untrained initial model
    pointer = registry.current("default")
    assert pointer is not None and pointer.model_id == trained

    # Nothing new: every step has nothing to do.
    result = cli("loop", "--once")
    assert result.exit_code == 0, result.output
    state = _state(lsettings)
    assert state["cycle"] == 2
    assert [state[f"{s}_state"] for s in ("ingest", "train", "evaluate", "deploy")] == [
        "skipped"
    ] * 4
    con = connect(lsettings.warehouse)
    try:
        steps = con.execute(
            "SELECT cycle, step, status FROM loop_steps ORDER BY cycle, started_at"
        ).fetchall()
    finally:
        con.close()
    assert [s[1] for s in steps if s[0] == 1] == ["ingest", "join", "train", "evaluate", "deploy"]


def test_a_second_loop_is_refused_while_one_runs(
    lsettings: Settings, cli: Callable[..., Result]
) -> None:
    with exclusive_lock(lsettings.pipeline.lock_path):
        with pytest.raises(LockHeld), exclusive_lock(lsettings.pipeline.lock_path):
            pass
        result = cli("loop", "--once")
    assert result.exit_code == 3
    assert "only one learning loop may run at a time" in result.output
    # Released with its holder.
    with exclusive_lock(lsettings.pipeline.lock_path):
        pass


def test_the_loop_repeats_until_stopped(lsettings: Settings) -> None:
    write_events(lsettings.storage.root, 300, seed=1)
    stop = threading.Event()
    reports: list[CycleReport] = []

    def seen(report: CycleReport) -> None:
        reports.append(report)
        if len(reports) == 2:
            stop.set()

    run_loop(lsettings, ["default"], every=0.05, once=False, stop=stop, on_cycle=seen)
    assert [r.cycle for r in reports] == [1, 2]


# Each kill point stops the process with os._exit, which skips every finally block and
# flush just as SIGKILL would, at a precise place in the cycle.
_KILL_POINTS = {
    # VW has written the model file to the registry, its metadata is not written yet.
    "train": """
        def save(self, model_file, metadata):
            key = f"models/{metadata.experiment}/{metadata.model_id}/model.vw"
            self.store.put_file(key, model_file)
            os._exit(9)
        ModelRegistry.save = save
    """,
    # The per-event file and summary are written, the evaluation is not in the metadata yet.
    "evaluate": """
        original = ModelRegistry.update_metadata
        def update_metadata(self, meta):
            if meta.history and meta.history[-1]["what"] == "evaluated":
                os._exit(9)
            original(self, meta)
        ModelRegistry.update_metadata = update_metadata
    """,
    # The pointer has moved; states and the decision record are not written yet.
    "deploy": """
        original = ModelRegistry.set_current
        def set_current(self, *args, **kwargs):
            original(self, *args, **kwargs)
            os._exit(9)
        ModelRegistry.set_current = set_current
    """,
}


@pytest.mark.parametrize("step", sorted(_KILL_POINTS))
def test_a_loop_killed_mid_cycle_finishes_it_without_skipping_or_relearning_data(
    lsettings: Settings, tmp_path: Path, step: str
) -> None:
    registry = _registry(lsettings)
    initial = registry.ensure_initial_model("default", lsettings.experiment("default")).model_id
    write_events(lsettings.storage.root, 1500, seed=1)
    script = (
        textwrap.dedent(
            """
        import os, sys
        from pathlib import Path
        from cbloop.registry import ModelRegistry
        from cbloop.settings import load_settings
        from cbloop_pipeline.loop import run_cycle
        """
        )
        + textwrap.dedent(_KILL_POINTS[step])
        + textwrap.dedent(
            """
        run_cycle(load_settings(Path(sys.argv[1]), env={}), "default")
        sys.exit(0)
        """
        )
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == 9, killed.stderr
    state = _state(lsettings)
    assert (state["step"], state["status"]) == (step, "running")

    # Events logged meanwhile are picked up by the resumed cycle or the next one.
    write_events(lsettings.storage.root, 500, seed=2)
    report = run_cycle(lsettings, "default")
    assert report.resumed_at == step
    assert _state(lsettings)["status"] == "done"
    run_cycle(lsettings, "default")

    pointer = registry.current("default")
    assert pointer is not None and pointer.model_id != initial
    deployed = registry.metadata("default", pointer.model_id)
    assert deployed.state == "deployed"
    assert registry.metadata("default", initial).state == "retired"
    # Every join learned exactly once along the deployed model's lineage (the newest model
    # continues from the deployed one or is it).
    newest = registry.list_models("default")[-1]
    chain = lineage(registry, newest)
    learned = [j for m in chain for j in m.joins]
    joins = _train_events_of_joins(lsettings)
    assert {j for j, n in joins.items() if n > 0} <= set(learned)
    assert len(learned) == len(set(learned))
    assert sum(m.events_trained for m in chain) == sum(joins.values())
    # A model file without metadata (the kill in train) is never listed, let alone deployed.
    listed = {m.model_id for m in registry.list_models("default")}
    on_disk = {
        p.parent.name for p in (lsettings.storage.root / "models/default").glob("*/model.vw")
    }
    assert pointer.model_id in listed
    if step == "train":
        assert len(on_disk - listed) == 1
    else:
        assert on_disk == listed
