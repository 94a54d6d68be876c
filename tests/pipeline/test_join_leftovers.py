"""A join killed during its export leaves files behind; the next join removes them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from crafted_segments import EventLogFolder, Pipeline, at, decision, iso, reward
from typer.testing import CliRunner

from cbloop_cli.main import app

# Each kill point ends the process with os._exit, which skips every finally block just as
# SIGKILL would, at a precise place in the join.
_KILL_POINTS = {
    # The train split is written in the work folder, the eval split not yet.
    "mid-export": """
        import cbloop_pipeline.export as export
        original = export._copy_split
        def _copy_split(con, labelled, files, split, dest):
            original(con, labelled, files, split, dest)
            if split == "train":
                os._exit(9)
        export._copy_split = _copy_split
    """,
    # The export files are in place; the job is not committed and has no manifest.
    "before-commit": """
        import cbloop_pipeline.join as join
        def _record_job(*args, **kwargs):
            os._exit(9)
        join._record_job = _record_job
    """,
}


def _files_under(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("point", sorted(_KILL_POINTS))
def test_the_next_join_removes_what_a_killed_join_left(
    wh: Pipeline, event_log: EventLogFolder, tmp_path: Path, point: str
) -> None:
    event_log.decisions(*(decision(f"e{i}", i) for i in range(200)))
    event_log.outcomes(*(reward(f"e{i}", i + 1, 1.0) for i in range(0, 200, 3)))
    config = tmp_path / "config.yaml"
    assert CliRunner().invoke(app, ["ingest", "--config", str(config)]).exit_code == 0
    script = (
        "import os, sys\n"
        + textwrap.dedent(_KILL_POINTS[point])
        + textwrap.dedent(
            f"""
            from cbloop_cli.main import app
            app(["join", "--as-of", "{iso(at(3600))}", "--config", sys.argv[1]])
            """
        )
    )
    killed = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert killed.returncode == 9, killed.stderr
    joined = wh.settings.storage.root / "joined" / "default"
    left = _files_under(joined)
    assert left, "the killed join left nothing behind; the kill point missed"
    assert wh.query("SELECT count(*) FROM join_jobs") == [(0,)]

    # A restart joins at a later time, hence under a new join id (as the loop would).
    result = CliRunner().invoke(
        app, ["join", "--as-of", iso(at(3700)), "--config", str(config), "--json"]
    )
    assert result.exit_code == 0, result.output
    # Only the finished join's folder remains, complete with its manifest.
    (job,) = wh.query("SELECT join_id FROM join_jobs")
    assert _files_under(joined) == {
        f"{job[0]}/train.dsjson",
        f"{job[0]}/eval.dsjson",
        f"{job[0]}/manifest.json",
    }
    assert not list(joined.glob(".tmp-*"))
