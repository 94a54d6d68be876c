"""Fixtures of the command-line tests: run `cbloop` in-process against a config file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cli_helpers import CliRun
from click.testing import Result
from typer.testing import CliRunner

from cbloop_cli.main import app


@pytest.fixture
def run_cli() -> CliRun:
    """run_cli(config_path, *args, env={...}) -> the command's result.

    Commands point the root logger at the stream they ran with (CliRunner's, closed
    afterwards); the test's handlers are put back so later log calls keep working.
    """

    def run(config: Path, *args: str, env: dict[str, str] | None = None) -> Result:
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            return CliRunner().invoke(app, [*args, "--config", str(config)], env=env)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)

    return run
