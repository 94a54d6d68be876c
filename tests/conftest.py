"""Fixtures shared by every test package."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from cbloop.settings import Settings, load_settings
from cbloop_cli.main import app

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

SettingsFactory = Callable[..., Settings]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = (
            _merge(out[key], value)
            if isinstance(value, dict) and isinstance(out.get(key), dict)
            else value
        )
    return out


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings rooted in a temp folder; keyword arguments are nested overrides.

    make_settings(service={"api_keys": ["k"]},
                  experiments={"default": {"reward": {"wait_seconds": 5}}})
    """

    def factory(**overrides: Any) -> Settings:
        data: dict[str, Any] = {
            "storage": {"root": str(tmp_path / "data")},
            "warehouse": {"path": str(tmp_path / "data" / "warehouse.duckdb")},
            "pipeline": {"lock_path": str(tmp_path / "data" / "pipeline.lock")},
            "logging": {"level": "INFO", "format": "text"},
        }
        data = _merge(data, overrides)
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(data))
        return load_settings(config, env={})

    return factory


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Result]:
    """Run a cbloop command in-process with the test's config.yaml (from make_settings).

    Commands point the root logger at the stream they ran with (CliRunner's, closed
    afterwards); the test's handlers are put back so later log calls keep working.
    """

    def run(*args: str) -> Result:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            return CliRunner().invoke(app, [*args, "--config", str(tmp_path / "config.yaml")])
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)

    return run
