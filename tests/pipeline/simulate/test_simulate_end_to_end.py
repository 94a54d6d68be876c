"""End to end through the real service and pipeline: does the system learn?"""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from cbloop_cli.main import app
from cbloop_pipeline.simulate.report import (
    INTERACTIONS_FILE,
    OPE_PLOT,
    REWARD_PLOT,
    SUMMARY_FILE,
    SUMMARY_MD_FILE,
)
from cbloop_pipeline.simulate.runner import SimulationOptions, run_simulation

# The shared data sits beside the project, as in CI: ../shared/data from the repository root.
SHUTTLE = Path(__file__).resolve().parents[3].parent / "shared/data/statlog-shuttle/shuttle.trn"


def test_synthetic_world_through_the_service_learns_well_above_uniform(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_simulation(
        SimulationOptions(out=out, world="synthetic", warm_start=100, loops=4, per_loop=250, seed=0)
    )
    for name in (SUMMARY_FILE, SUMMARY_MD_FILE, INTERACTIONS_FILE, REWARD_PLOT, OPE_PLOT):
        assert (out / name).is_file(), name

    summary = orjson.loads((out / SUMMARY_FILE).read_bytes())
    totals = summary["totals"]
    assert totals["interactions"] == 1000
    with (out / INTERACTIONS_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1000
    assert len({r["event_id"] for r in rows}) == 1000

    # Every round was served by the model deployed before it, and the pipeline ran after it.
    for loop in result.loops:
        assert loop.other_models == []
        assert loop.interactions == 250
        assert loop.pipeline["steps"]["ingest"].startswith("done")
        assert loop.deployed_after is not None
    # The cycle after a round joins all of that round, rewarded: its segments were closed and
    # its reward windows over before the join ran.
    joined = Path(summary["storage_root"]) / "joined" / "default"
    manifests = [orjson.loads(p.read_bytes()) for p in sorted(joined.glob("*/manifest.json"))]
    assert [(m["joined"], m["rewarded"], m["late_rewards"]) for m in manifests] == [
        (250, 250, 0)
    ] * 4
    assert all(r.model_id == result.loops[int(r.loop) - 1].model_id for r in result.interactions)

    late = [i.reward for i in result.interactions if i.loop >= 3]
    uniform = totals["uniform"]
    assert sum(late) / len(late) > uniform + 0.15
    assert totals["system_mean_reward"] < totals["oracle"]
    assert totals["best_fixed"] > uniform


def test_cli_refuses_a_table_world_without_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--world", "table", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--data" in result.output


def test_cli_refuses_an_unknown_world(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--world", "mars", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "'table' or 'synthetic'" in result.output


@pytest.mark.slow
@pytest.mark.skipif(not SHUTTLE.exists(), reason="shared statlog-shuttle data not present")
def test_shuttle_reference_workflow_meets_its_targets(tmp_path: Path) -> None:
    result = run_simulation(
        SimulationOptions(
            out=tmp_path / "shuttle",
            world="table",
            data=SHUTTLE,
            warm_start=100,
            loops=15,
            per_loop=500,
            seed=0,
        )
    )
    totals = result.summary["totals"]
    assert totals["last_loops"] == 5
    assert totals["last_loops_mean_reward"] >= 0.95
    assert totals["system_vs_online"] >= 0.9
    # Every round after the first is served by an evaluated model.
    assert totals["ope_loops"] == 14
    # Each deployed model's OPE interval (judged on the newest round's eval split) covers the
    # reward it then earned; the interval widened by the round's own sampling noise, too.
    assert totals["ope_coverage"] >= 0.8
    assert totals["ope_consistency"] >= 0.8
