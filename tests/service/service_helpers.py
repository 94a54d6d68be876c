"""Plain helpers for the service tests (fixtures are in conftest.py)."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from cbloop.clock import format_ts
from cbloop.encoding import build_vw_context, encode_context
from cbloop.registry import ModelMetadata, ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop.vw import open_workspace

ClientFactory = Callable[..., TestClient]


def app_settings(client: TestClient) -> Settings:
    settings: Settings = client.app.state.service.settings  # type: ignore[attr-defined]
    return settings


def logged(root: Path, kind: str) -> list[dict[str, Any]]:
    """Every line under events/<kind>, open segments included (the app may still run)."""
    lines: list[dict[str, Any]] = []
    base = root / "events" / kind
    if not base.exists():
        return lines
    for path in sorted(base.rglob("*.jsonl*")):
        lines.extend(orjson.loads(raw) for raw in path.read_bytes().splitlines() if raw)
    return lines


def rank_body(n_actions: int = 4, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "context": {"user": {"age": 31, "city": "paris", "premium": True}},
        "actions": [
            {"id": f"a{i}", "features": {"item": {"topic": f"t{i % 3}", "len": 100 + i}}}
            for i in range(n_actions)
        ],
    }
    body.update(extra)
    return body


def train_model(settings: Settings, experiment: str = "default", *, favour: int = 2) -> Path:
    """A model file trained to prefer action `favour` of rank_body(), so its pmf is skewed."""
    args = settings.experiment(experiment).vw_arguments()
    ws = open_workspace(args)
    body = rank_body()
    actions = [(a["id"], a["features"]) for a in body["actions"]]
    c_json = encode_context(build_vw_context(body["context"], actions)).decode()
    rng = random.Random(7)
    for _ in range(200):
        k = rng.randrange(len(body["actions"]))
        cost = -1.0 if k == favour else 0.0
        ws.learn(
            f'{{"_label_cost":{cost},"_label_probability":0.25,"_label_Action":{k + 1},'
            f'"_labelIndex":{k},"a":[{k + 1}],"c":{c_json}}}'
        )
    path = Path(tempfile.mkdtemp()) / "model.vw"
    ws.save(str(path))
    ws.finish()
    return path


def publish_model(
    settings: Settings,
    model_file: Path,
    *,
    experiment: str = "default",
    vw_args: str | None = None,
    make_current: bool = True,
) -> str:
    """Put a model file in the registry (with the given or the experiment's args)."""
    registry = ModelRegistry(open_store(settings.storage))
    meta = ModelMetadata(
        model_id=registry.new_model_id(),
        experiment=experiment,
        vw_args=vw_args or settings.experiment(experiment).vw_arguments(),
        created_at=format_ts(),
    )
    registry.save(model_file, meta)
    if make_current:
        registry.set_current(experiment, meta.model_id, reason="test")
    return meta.model_id
