"""docker-compose.yml: valid, runs real cbloop commands, and mounts a config that loads.

No container engine is needed: the commands are parsed by the real `cbloop` CLI (without
running them) and the mounted config goes through `load_settings`. `docker compose config`
runs too where a compose client is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import typer
import yaml
from fastapi.testclient import TestClient

from cbloop.settings import Settings, load_settings, parse_duration
from cbloop_cli.main import app
from cbloop_service.app import create_app

REPO = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO / "docker-compose.yml"
CONFIG_TARGET = "/etc/cbloop/config.yaml"
ENV_EXAMPLE = REPO / ".env.example"


def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def cbloop_services() -> dict[str, dict[str, Any]]:
    """Services that run the project's own image (the others are third-party images)."""
    return {
        name: spec
        for name, spec in compose()["services"].items()
        if "build" in spec or str(spec.get("image", "")).startswith("cbloop")
    }


def command_of(spec: dict[str, Any]) -> list[str]:
    command = spec["command"]
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def mounts(spec: dict[str, Any]) -> dict[str, str]:
    """Container path -> source, for short-syntax volume entries."""
    found = {}
    for entry in spec.get("volumes", []):
        source, target, *_ = str(entry).split(":")
        found[target] = source
    return found


def mounted_config(spec: dict[str, Any]) -> Path:
    source = mounts(spec)[CONFIG_TARGET]
    return (COMPOSE_FILE.parent / source).resolve()


def settings_of(spec: dict[str, Any]) -> Settings:
    return load_settings(mounted_config(spec), env={})


def test_the_compose_file_is_yaml_with_the_store_the_service_and_the_pipeline() -> None:
    services = compose()["services"]

    assert {"s3", "service", "pipeline"} <= set(services)
    assert set(cbloop_services()) >= {"service", "pipeline"}
    for name, spec in services.items():
        assert "image" in spec or "build" in spec, name


@pytest.mark.parametrize("name", sorted(cbloop_services()))
def test_every_cbloop_service_runs_a_registered_subcommand_with_valid_options(name: str) -> None:
    words = command_of(cbloop_services()[name])
    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    registered = set(group.commands)

    assert words[0] == "cbloop"
    assert words[1] in registered, f"`cbloop {words[1]}` is not a command ({sorted(registered)})"
    # Parsing (not running) the arguments rejects unknown options and bad values.
    command = group.commands[words[1]]
    with group.make_context("cbloop", [words[1]]) as parent:
        command.make_context(words[1], words[2:], parent=parent)
    assert words[words.index("--config") + 1] == CONFIG_TARGET
    if "--every" in words:
        parse_duration(words[words.index("--every") + 1])


@pytest.mark.parametrize("name", sorted(cbloop_services()))
def test_every_cbloop_service_mounts_the_shared_config_and_it_loads(name: str) -> None:
    spec = cbloop_services()[name]
    path = mounted_config(spec)

    assert path == REPO / "docker" / "config.yaml"
    [entry] = [str(v) for v in spec["volumes"] if f":{CONFIG_TARGET}" in str(v)]
    assert entry.endswith(":ro")  # containers must not rewrite the shared config
    settings = settings_of(spec)
    assert settings.storage.backend == "s3"


def test_the_config_points_at_the_compose_store_and_its_bucket() -> None:
    services = compose()["services"]
    settings = settings_of(services["service"])
    endpoint = urlparse(settings.storage.s3.endpoint_url or "")

    assert endpoint.hostname in services
    bucket_setup = " ".join(command_of(services["createbucket"]))
    assert f"/{settings.storage.s3.bucket}" in bucket_setup


def test_state_lives_in_volumes_where_the_config_puts_it() -> None:
    services = compose()["services"]
    settings = settings_of(services["service"])
    declared = set(compose()["volumes"])

    service_mounts = mounts(services["service"])
    assert service_mounts[str(settings.storage.root)] in declared
    pipeline_mounts = mounts(services["pipeline"])
    assert pipeline_mounts[str(settings.warehouse.path.parent)] in declared
    assert str(settings.pipeline.lock_path.parent) in pipeline_mounts
    # The service listens on all interfaces inside its container, on the published port.
    assert settings.service.host == "0.0.0.0"
    published = [str(p).rsplit(":", 1)[-1] for p in services["service"]["ports"]]
    assert str(settings.service.port) in published


def test_the_dockerfile_installs_the_lock_then_the_project_without_dependencies() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").split()

    assert dockerfile.startswith("#") and "FROM python:3.11-slim" in dockerfile
    assert dockerfile.index("requirements.lock") < dockerfile.index("--no-deps")
    assert {".venv", "data", ".git"} <= set(ignored)


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


@pytest.mark.skipif(not docker_compose_available(), reason="no docker compose client here")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr.decode()


# -- keys from .env: compose never publishes an open service ----------------------------

_VARIABLE = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}` (unset or empty)."""

    def value(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op == "?":
            raise MissingVariable(f"{name}: {arg}")
        return arg if op == "-" else ""

    return _VARIABLE.sub(value, text)


def dotenv(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def compose_with(env: dict[str, str]) -> dict[str, Any]:
    loaded = yaml.safe_load(interpolate(COMPOSE_FILE.read_text(encoding="utf-8"), env))
    assert isinstance(loaded, dict)
    return loaded


def test_compose_refuses_to_start_the_service_without_client_and_admin_keys() -> None:
    example = dotenv(ENV_EXAMPLE)
    without_keys = {k: v for k, v in example.items() if "API_KEYS" not in k}
    with pytest.raises(MissingVariable, match="CBLOOP_API_KEYS"):
        compose_with(without_keys)
    with pytest.raises(MissingVariable, match="CBLOOP_ADMIN_API_KEYS"):
        compose_with({**without_keys, "CBLOOP_API_KEYS": example["CBLOOP_API_KEYS"]})


def test_the_service_port_is_published_on_loopback_unless_asked() -> None:
    (default,) = compose_with(dotenv(ENV_EXAMPLE))["services"]["service"]["ports"]
    assert str(default).startswith("127.0.0.1:")
    env = {**dotenv(ENV_EXAMPLE), "CBLOOP_BIND": "0.0.0.0", "CBLOOP_PORT": "9000"}
    assert compose_with(env)["services"]["service"]["ports"] == ["0.0.0.0:9000:8000"]


def test_keys_from_the_env_file_guard_client_and_admin_routes(tmp_path: Path) -> None:
    example = dotenv(ENV_EXAMPLE)
    example["CBLOOP_API_KEYS"] = "client-1,client-2"  # comma-separated lists work
    service_env = compose_with(example)["services"]["service"]["environment"]
    overrides = {k: str(v) for k, v in service_env.items() if k.startswith("CBLOOP_")}
    # The container's settings, but with local storage so no S3 server is needed here.
    overrides |= {"CBLOOP_STORAGE__BACKEND": "local", "CBLOOP_STORAGE__ROOT": str(tmp_path)}
    settings = load_settings(REPO / "docker" / "config.yaml", env=overrides)
    assert settings.service.api_keys == ["client-1", "client-2"]
    admin = example["CBLOOP_ADMIN_API_KEYS"]
    assert settings.service.admin_api_keys == [admin]

    rank = {"context": {"u": {"x": 1}}, "actions": [{"id": "a"}, {"id": "b"}]}
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/rank", json=rank).status_code == 401
        assert (
            client.post("/v1/rank", json=rank, headers={"X-API-Key": "client-2"}).status_code == 200
        )
        assert client.get("/metrics", headers={"X-API-Key": "client-1"}).status_code == 403
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": admin}).status_code == 200
        model = client.get("/v1/experiments/default/model", headers={"X-API-Key": "client-1"})
        assert model.status_code == 403
