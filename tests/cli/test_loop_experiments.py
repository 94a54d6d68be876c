"""`cbloop loop` without -e runs a cycle of every configured experiment."""

from __future__ import annotations

from pathlib import Path

import duckdb
from cli_helpers import CliRun, write_config


def _cycled(warehouse: Path) -> set[str]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {str(r[0]) for r in con.execute("SELECT experiment FROM loop_steps").fetchall()}
    finally:
        con.close()


def test_loop_without_an_experiment_runs_every_configured_one(
    tmp_path: Path, run_cli: CliRun
) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "storage": {"root": str(tmp_path / "data")},
            "logging": {"format": "text"},
            "experiments": {"default": {}, "homepage": {"reward": {"wait_seconds": 30}}},
        },
    )

    result = run_cli(config, "loop", "--once")

    assert result.exit_code == 0, result.output
    assert "default cycle 1" in result.stdout
    assert "homepage cycle 1" in result.stdout
    assert "no decisions of experiment homepage logged yet" in result.stdout
    assert _cycled(tmp_path / "data" / "warehouse.duckdb") == {"default", "homepage"}


def test_loop_with_an_experiment_runs_only_that_one(tmp_path: Path, run_cli: CliRun) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "storage": {"root": str(tmp_path / "data")},
            "logging": {"format": "text"},
            "experiments": {"default": {}, "homepage": {}},
        },
    )

    result = run_cli(config, "loop", "--once", "-e", "homepage")

    assert result.exit_code == 0, result.output
    assert "homepage cycle 1" in result.stdout and "default cycle" not in result.stdout
    assert _cycled(tmp_path / "data" / "warehouse.duckdb") == {"homepage"}
