"""The CLI's one error edge: an expected failure is one line on stderr and an exit status.

Each command runs as a real `cbloop` process (`python -m cbloop_cli`), so what is checked is
what a user sees: no traceback, one `error: ...` line, exit 1 for a failure and 2 for a
command that must change.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from cbloop.settings import Settings

QUIET = {"logging": {"level": "WARNING", "format": "text"}}


def closed_port() -> int:
    """A loopback port nobody listens on: connections to it are refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def run_cbloop(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CBLOOP_", "AWS_"))}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(cwd / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(cwd / "no-aws-credentials"),
        }
    )
    return subprocess.run(
        [sys.executable, "-m", "cbloop_cli", *args, "--config", str(cwd / "config.yaml")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=env,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


@pytest.mark.parametrize("command", ["train", "evaluate", "deploy", "rollback"])
def test_an_unreachable_store_is_one_line_and_exit_1(
    command: str, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    make_settings(
        storage={
            "backend": "s3",
            "s3": {"bucket": "cbloop", "endpoint_url": endpoint, "region": "us-east-1"},
        },
        **QUIET,
    )

    result = run_cbloop(command, cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert endpoint in lines[0]
    assert "check storage in the settings" in lines[0]  # what to do about it


def test_a_busy_warehouse_is_one_line_and_exit_1(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(**QUIET)
    settings.warehouse.path.parent.mkdir(parents=True, exist_ok=True)
    holder = duckdb.connect(str(settings.warehouse.path))  # DuckDB: one writing process
    try:
        result = run_cbloop("report", cwd=tmp_path)
    finally:
        holder.close()

    assert result.returncode == 1, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "another cbloop command holds the warehouse" in lines[0]


def test_a_corrupt_warehouse_is_one_line_and_exit_1(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(**QUIET)
    settings.warehouse.path.parent.mkdir(parents=True, exist_ok=True)
    settings.warehouse.path.write_bytes(b"this is not a DuckDB file\n" * 100)

    result = run_cbloop("migrate", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and str(settings.warehouse.path) in lines[0]


def test_bad_usage_is_one_line_and_exit_2(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    make_settings(**QUIET)

    result = run_cbloop("loop", "--once", "--every", "soon", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "invalid duration 'soon'" in lines[0]


def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("service:\n  port: not-a-port\n")

    result = run_cbloop("migrate", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert len(lines) == 1 and "service.port" in lines[0]
    assert "fix config.yaml" in lines[0]
