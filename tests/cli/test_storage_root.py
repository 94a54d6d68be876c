"""`storage.root` moves all state: the warehouse and the loop's lock default to paths under it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import CliRun, write_config

from cbloop.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_warehouse_and_lock_default_to_files_under_storage_root(tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", {"storage": {"root": str(tmp_path / "state")}})

    settings = load_settings(config, env={})

    assert settings.warehouse.path == tmp_path / "state" / "warehouse.duckdb"
    assert settings.pipeline.lock_path == tmp_path / "state" / "pipeline.lock"


def test_explicit_warehouse_and_lock_paths_still_win(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {
            "storage": {"root": str(tmp_path / "state")},
            "warehouse": {"path": str(tmp_path / "wh" / "w.duckdb")},
            "pipeline": {"lock_path": str(tmp_path / "locks" / "l.lock")},
        },
    )

    settings = load_settings(config, env={})

    assert settings.warehouse.path == tmp_path / "wh" / "w.duckdb"
    assert settings.pipeline.lock_path == tmp_path / "locks" / "l.lock"


def test_the_shipped_config_follows_a_storage_root_set_from_the_environment(
    tmp_path: Path,
) -> None:
    env = {"CBLOOP_STORAGE__ROOT": str(tmp_path / "var")}

    settings = load_settings(REPO_ROOT / "config.yaml", env=env)

    assert settings.storage.root == tmp_path / "var"
    assert settings.warehouse.path == tmp_path / "var" / "warehouse.duckdb"
    assert settings.pipeline.lock_path == tmp_path / "var" / "pipeline.lock"


def test_null_paths_are_derived_and_an_environment_override_still_wins(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        {"storage": {"root": str(tmp_path / "s")}, "warehouse": {"path": None}},
    )
    env = {"CBLOOP_PIPELINE__LOCK_PATH": str(tmp_path / "elsewhere.lock")}

    settings = load_settings(config, env=env)

    assert settings.warehouse.path == tmp_path / "s" / "warehouse.duckdb"
    assert settings.pipeline.lock_path == tmp_path / "elsewhere.lock"


def test_a_loop_run_with_only_storage_root_keeps_every_file_under_it(
    tmp_path: Path, run_cli: CliRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # the old defaults were ./data/... relative to here
    state = tmp_path / "state"
    config = write_config(
        tmp_path / "c.yaml",
        {"storage": {"root": str(state)}, "logging": {"format": "text"}},
    )

    result = run_cli(config, "loop", "--once")

    assert result.exit_code == 0, result.output
    assert (state / "warehouse.duckdb").is_file()
    assert (state / "pipeline.lock").is_file()
    assert list(work.iterdir()) == []
