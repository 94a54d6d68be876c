"""`cbloop serve` on a port someone else listens on: one line saying what to change, exit 1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cbloop.settings import Settings


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _serve(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            "from cbloop_cli.main import main; main()",
            "serve",
            "--config",
            str(config),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess[str], port: int) -> None:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"port {port}" in lines[0]
    assert "--port" in lines[0]
    assert "CBLOOP_SERVICE__PORT" in lines[0]


def test_busy_port_from_the_command_line(
    make_settings: Callable[..., Settings], tmp_path: Path, busy_port: int
) -> None:
    make_settings(logging={"level": "WARNING"})
    _assert_one_clear_line(_serve(tmp_path / "config.yaml", "--port", str(busy_port)), busy_port)


def test_busy_port_from_the_environment(
    make_settings: Callable[..., Settings], tmp_path: Path, busy_port: int
) -> None:
    make_settings(logging={"level": "WARNING"})
    result = _serve(tmp_path / "config.yaml", env={"CBLOOP_SERVICE__PORT": str(busy_port)})
    _assert_one_clear_line(result, busy_port)
