"""`cbloop experiments ...` on the real store, and the pipeline commands following the catalog."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from cli_helpers import CliRun, write_config

from cbloop.experiments import ExperimentCatalog
from cbloop.registry import ModelRegistry
from cbloop.settings import load_settings
from cbloop.storage import open_store
from cbloop_cli.experiments import CatalogWinnerSink


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "c.yaml",
        {
            "storage": {"root": str(tmp_path / "data")},
            "logging": {"format": "text", "level": "WARNING"},
            "experiments": {"default": {}},
        },
    )


def _json(text: str) -> object:
    return json.loads(text)


def test_create_show_update_history_archive(config: Path, run_cli: CliRun, tmp_path: Path) -> None:
    settings_file = tmp_path / "home.yaml"
    settings_file.write_text("reward:\n  wait_seconds: 30\n  aggregation: sum\n")
    created = run_cli(
        config,
        "experiments",
        "create",
        "homepage",
        "--file",
        str(settings_file),
        "--set",
        "exploration.type=egreedy",
        "--set",
        "exploration.epsilon=0.2",
        "--set",
        "reward.default=null",
        "--by",
        "ann",
    )
    assert created.exit_code == 0, created.output
    assert "homepage version 1 (active)" in created.stdout

    shown = run_cli(config, "experiments", "show", "homepage", "--format", "json")
    assert shown.exit_code == 0, shown.output
    body = _json(shown.stdout)
    assert isinstance(body, dict)
    assert body["settings"]["reward"] == {
        **body["settings"]["reward"],
        "wait_seconds": 30.0,
        "aggregation": "sum",
        "default": None,
    }
    assert body["by"] == "ann" and "--epsilon 0.2" in body["vw_arguments"]

    updated = run_cli(
        config,
        "experiments",
        "update",
        "homepage",
        "--set",
        "vw_args=--interactions :A -b 16",
        "--why",
        "smaller model",
    )
    assert updated.exit_code == 0, updated.output
    assert "homepage version 2" in updated.stdout and "fresh model" in updated.stdout

    history = run_cli(config, "experiments", "history", "homepage", "--format", "json")
    versions = _json(history.stdout)
    assert isinstance(versions, list)
    assert [(v["version"], v["why"]) for v in versions] == [(1, "created"), (2, "smaller model")]
    assert versions[1]["fresh_model_reason"] is not None

    listed = run_cli(config, "experiments", "list")
    assert listed.exit_code == 0 and "homepage" in listed.stdout and "default" in listed.stdout

    archived = run_cli(config, "experiments", "archive", "homepage", "--why", "ended")
    assert archived.exit_code == 0, archived.output
    after = _json(run_cli(config, "experiments", "list", "--format", "json").stdout)
    assert isinstance(after, list) and [e["name"] for e in after] == ["default"]


def test_a_bad_value_names_the_key_and_changes_nothing(config: Path, run_cli: CliRun) -> None:
    assert run_cli(config, "experiments", "create", "homepage").exit_code == 0
    bad = run_cli(
        config, "experiments", "update", "homepage", "--set", "split.train_ratio=2", "--why", "x"
    )
    assert bad.exit_code == 2
    assert "split.train_ratio" in bad.output
    no_why = run_cli(config, "experiments", "update", "homepage", "--set", "split.train_ratio=0.5")
    assert no_why.exit_code == 2 and "--why" in no_why.output
    malformed = run_cli(config, "experiments", "update", "homepage", "--set", "x", "--why", "x")
    assert malformed.exit_code == 2 and "KEY=VALUE" in malformed.output
    again = run_cli(config, "experiments", "create", "homepage")
    assert again.exit_code == 2 and "already exists" in again.output
    missing = run_cli(config, "experiments", "show", "nope")
    assert missing.exit_code == 2 and "does not exist" in missing.output
    history = _json(run_cli(config, "experiments", "history", "homepage", "-f", "json").stdout)
    assert isinstance(history, list) and len(history) == 1


def _cycled(warehouse: Path) -> set[str]:
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        return {str(r[0]) for r in con.execute("SELECT experiment FROM loop_steps").fetchall()}
    finally:
        con.close()


def test_loop_and_report_follow_the_catalog_not_the_file(
    config: Path, run_cli: CliRun, tmp_path: Path
) -> None:
    assert run_cli(config, "loop", "--once").exit_code == 0
    assert _cycled(tmp_path / "data" / "warehouse.duckdb") == {"default"}
    assert run_cli(config, "experiments", "create", "homepage").exit_code == 0

    second = run_cli(config, "loop", "--once")
    assert second.exit_code == 0, second.output
    assert "homepage cycle 1" in second.stdout
    assert _cycled(tmp_path / "data" / "warehouse.duckdb") == {"default", "homepage"}
    report = run_cli(config, "report", "-e", "homepage", "--format", "json")
    assert report.exit_code == 0, report.output

    assert run_cli(config, "experiments", "archive", "homepage", "--why", "x").exit_code == 0
    third = run_cli(config, "loop", "--once")
    assert third.exit_code == 0 and "homepage cycle" not in third.stdout
    gone = run_cli(config, "report", "-e", "homepage")
    assert gone.exit_code == 2 and "unknown experiment" in gone.output


def test_a_search_winner_becomes_the_next_version_with_its_evidence(config: Path) -> None:
    settings = load_settings(config, env={})
    store = open_store(settings.storage)
    ModelRegistry(store).ensure_initial_model("default", settings.experiment("default"))
    evidence = {"estimator": "dr", "winner": {"value": 0.7}, "current": {"value": 0.5}}

    where = CatalogWinnerSink(settings, by="search").apply_winner(
        "default", "--interactions :A -b 16", {"type": "egreedy", "epsilon": 0.1}, evidence
    )

    record = ExperimentCatalog(store).get("default")
    assert where == "experiment 'default' version 2 in the store"
    assert (record.version, record.by, record.evidence) == (2, "search", evidence)
    assert record.experiment().vw_args == "--interactions :A -b 16"
    assert record.fresh_model_id is not None
    pointer = ModelRegistry(store).current("default")
    assert pointer is not None and pointer.model_id == record.fresh_model_id
