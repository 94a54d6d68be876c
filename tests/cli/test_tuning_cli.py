"""`cbloop search` and `cbloop features` through the real CLI on the seeded cross world."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cli_helpers import CliRun
from tuning_world import EXPERIMENT, log_and_join

from cbloop.experiments import ExperimentCatalog
from cbloop.settings import ExperimentSettings, Settings, load_settings
from cbloop.storage import open_store

GRID = """\
interactions:
  - "--interactions :A"
  - "--interactions :A -q ui"
exploration:
  - {type: squarecb, gamma_scale: 10}
"""


def _config(make_settings: Callable[..., Settings], tmp_path: Path, **experiment: str) -> Path:
    settings = make_settings(experiments={"default": {**EXPERIMENT, **experiment}})
    log_and_join(settings, 2000, seed=3)
    return tmp_path / "config.yaml"


@pytest.fixture
def world_config(make_settings: Callable[..., Settings], tmp_path: Path) -> Path:
    """config.yaml of the cross world (settings without the cross), logged and joined."""
    return _config(make_settings, tmp_path)


@pytest.fixture
def crossed_config(make_settings: Callable[..., Settings], tmp_path: Path) -> Path:
    """The same world with settings that have the cross."""
    return _config(make_settings, tmp_path, vw_args="-q ui -b 18")


@pytest.fixture
def grid_file(tmp_path: Path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(GRID)
    return path


def test_search_apply_writes_the_cross_as_winner(
    run_cli: CliRun, world_config: Path, grid_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = run_cli(
        world_config,
        "search",
        "-e",
        "default",
        "--grid",
        str(grid_file),
        "--out",
        str(out),
        "--apply",
    )
    assert result.exit_code == 0, result.output
    assert "applied c02" in result.output
    winner = yaml.safe_load((out / "winner.yaml").read_text())
    assert "-q ui" in winner["experiments"]["default"]["vw_args"]
    assert winner["experiments"]["default"]["exploration"]["type"] == "squarecb"
    # The fragment is a valid experiment definition as it stands.
    ExperimentSettings.model_validate(winner["experiments"]["default"])
    record = json.loads((out / "search.json").read_text())
    assert record["decision"]["apply"] is True and record["decision"]["requested"] is True
    assert record["decision"]["copy"] == str(out / "winner.yaml")
    # Applied means the experiment itself changed: its next version in the store, with the
    # search's evidence, which every worker and the loop then follow.
    settings = load_settings(world_config)
    head = ExperimentCatalog(open_store(settings.storage)).get("default")
    assert head.version == 2
    assert "version 2" in record["decision"]["applied_to"]
    assert "-q ui" in head.settings["vw_args"]
    assert head.evidence is not None and head.evidence["winner"]["name"] == "c02"
    assert "cbloop search" in head.why
    assert [r["name"] for r in record["ranked"]] == ["c02", "current"]
    csv_lines = (out / "search.csv").read_text().splitlines()
    assert csv_lines[0].startswith("rank,name,vw_args") and len(csv_lines) == 3
    assert (out / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_search_refuses_to_apply_when_the_current_settings_win(
    run_cli: CliRun, world_config: Path, tmp_path: Path
) -> None:
    grid = tmp_path / "weak.yaml"
    # Only settings that lack the cross: none can beat the current ones by a lower bound.
    grid.write_text("interactions: ['--interactions :A']\nlearning_rate: [0.001]\n")
    out = tmp_path / "run"
    result = run_cli(world_config, "search", "--grid", str(grid), "--out", str(out), "--apply")
    assert result.exit_code == 0, result.output
    assert "not applied" in result.output
    assert not (out / "winner.yaml").exists()
    settings = load_settings(world_config)
    assert ExperimentCatalog(open_store(settings.storage)).get("default").version == 1
    record = json.loads((out / "search.json").read_text())
    assert record["decision"]["apply"] is False
    assert record["decision"]["reason"]


def test_bad_grid_file_is_a_cli_error_naming_the_problem(
    run_cli: CliRun, world_config: Path, tmp_path: Path
) -> None:
    grid = tmp_path / "bad.yaml"
    grid.write_text("interactions: ['-q ui --data /etc/passwd']\n")
    result = run_cli(world_config, "search", "--grid", str(grid), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "error:" in result.output and "'--data' is not allowed" in result.output
    assert str(grid) in result.output


def test_features_reports_namespaces_and_warnings(
    run_cli: CliRun, crossed_config: Path, tmp_path: Path
) -> None:
    out = tmp_path / "feat"
    result = run_cli(crossed_config, "features", "-e", "default", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "id_like: noise.session" in result.output
    assert "constant: noise.version" in result.output
    assert "collision: namespaces noise, nuisance" in result.output
    record = json.loads((out / "features.json").read_text())
    verdicts = {n["vw_namespace"]: n["verdict"] for n in record["namespaces"]}
    assert verdicts["n"] == "negligible"
    assert verdicts["u"] == "helps" and verdicts["i"] == "helps"
    assert (out / "features.png").exists() and (out / "features.csv").exists()


def test_unknown_estimator_is_a_cli_error(
    run_cli: CliRun, world_config: Path, grid_file: Path, tmp_path: Path
) -> None:
    result = run_cli(
        world_config,
        "search",
        "--grid",
        str(grid_file),
        "--estimator",
        "magic",
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code == 2
    assert "unknown estimator 'magic'" in result.output


def test_search_without_joins_says_what_is_missing(
    run_cli: CliRun, make_settings: Callable[..., Settings], tmp_path: Path, grid_file: Path
) -> None:
    make_settings(experiments={"default": dict(EXPERIMENT)})
    result = run_cli(
        tmp_path / "config.yaml", "search", "--grid", str(grid_file), "--out", str(tmp_path / "o")
    )
    assert result.exit_code == 2
    assert "no join has train events" in result.output
