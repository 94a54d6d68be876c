"""The wheel is the product: built from the tree, installed in a fresh venv, run from nowhere.

A non-editable install must carry everything the commands need (the SQL migrations
included), install nothing under generic top-level names, and leave out no package folder
of the source tree (pyproject.toml lists them by hand).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Source folders that hold packages, and the import name each one installs as.
SOURCE_ROOTS = {
    REPO_ROOT / "cbloop": "cbloop",
    REPO_ROOT / "service" / "cbloop_service": "cbloop_service",
    REPO_ROOT / "pipeline" / "cbloop_pipeline": "cbloop_pipeline",
    REPO_ROOT / "cli" / "cbloop_cli": "cbloop_cli",
    REPO_ROOT / "migrations": "cbloop_migrations",
}


def source_packages() -> set[str]:
    """Every package of the source tree (a folder with __init__.py), as an import path."""
    found = set()
    for root, name in SOURCE_ROOTS.items():
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(root).parts
            found.add(".".join((name, *relative)))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), "."],
        cwd=REPO_ROOT,
        check=True,
        timeout=600,
    )
    (built,) = out.glob("cbloop-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the runtime lock and the wheel (no editable, no tests): its bin/."""
    env_dir = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(env_dir)
    pip = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    lock = REPO_ROOT / "requirements.lock"
    subprocess.run([*pip, "-r", str(lock)], check=True, timeout=1800, env=_clean_env())
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, timeout=600, env=_clean_env())
    return env_dir / "bin"


def _clean_env() -> dict[str, str]:
    # Nothing may reach back into the source tree or another deployment's settings.
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CBLOOP_") and k not in {"PYTHONPATH", "VIRTUAL_ENV"}
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_the_wheel_installs_only_cbloop_names(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names if "/" in name}
    top = {t for t in top if not t.endswith((".dist-info", ".data"))}
    assert top == {"cbloop", "cbloop_service", "cbloop_pipeline", "cbloop_cli", "cbloop_migrations"}
    assert not top & {"service", "pipeline", "migrations", "cli", "tests"}
    assert any(n.startswith("cbloop_migrations/") and n.endswith(".sql") for n in names)


def test_every_package_folder_of_the_tree_is_in_the_wheel(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        in_wheel = {
            n.removesuffix("/__init__.py").replace("/", ".")
            for n in archive.namelist()
            if n.endswith("/__init__.py")
        }
    missing = source_packages() - in_wheel
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


@pytest.fixture
def empty_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


def test_the_installed_wheel_runs_migrate_serve_loop_and_report_from_an_empty_folder(
    installed: Path, empty_folder: Path
) -> None:
    def cbloop(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(installed / "cbloop"), *args],
            cwd=empty_folder,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    where = subprocess.run(
        [
            str(installed / "python"),
            "-c",
            "import cbloop_pipeline; print(cbloop_pipeline.__file__)",
        ],
        cwd=empty_folder,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "site-packages" in where.stdout and str(REPO_ROOT) not in where.stdout

    migrated = cbloop("migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "0001_experiments" in migrated.stdout

    port = _free_port()
    log = empty_folder / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(installed / "cbloop"), "serve", "--port", str(port), "--workers", "1"],
            cwd=empty_folder,
            env=_clean_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        health = _wait_for_health(f"http://127.0.0.1:{port}/healthz", server, log)
        assert health.status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    # uvicorn shuts down cleanly, then re-raises the signal it handled.
    assert server.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()

    looped = cbloop("loop", "--once")
    assert looped.returncode == 0, looped.stderr
    assert "default cycle" in looped.stdout

    reported = cbloop("report")
    assert reported.returncode == 0, reported.stderr


def _wait_for_health(url: str, server: subprocess.Popen[bytes], log: Path) -> httpx.Response:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"cbloop serve exited with {server.returncode}:\n{log.read_text()}")
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail(f"cbloop serve did not answer {url}:\n{log.read_text()}")
