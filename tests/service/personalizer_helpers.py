"""Helpers of the Personalizer API tests: one conversation in both shapes, and its traces."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient
from service_helpers import logged

from cbloop.clock import utcnow_naive
from cbloop.settings import Settings, load_settings
from cbloop.storage import open_store
from cbloop_pipeline.ingest import ingest
from cbloop_pipeline.join import run_join
from cbloop_pipeline.warehouse import connect
from cbloop_service.app import create_app

PERSONALIZER_RANK = "/personalizer/v1.0/rank"

#: One user visit in Personalizer's shape, with nesting, arrays and a top-level feature.
CONTEXT = [
    {"user": {"age": 31, "premium": True, "loc": {"city": "paris", "zip": 75011}}},
    {"device": {"os": "android", "tags": ["night", "wifi"]}},
    {"hour": 21},
]
#: The same context as cbloop's namespaces, as features.py documents the mapping.
NATIVE_CONTEXT = {
    "user": {"age": 31, "premium": True, "loc.city": "paris", "loc.zip": 75011},
    "device": {"os": "android", "tags[0]": "night", "tags[1]": "wifi"},
    "default": {"hour": 21},
}


def actions(n: int = 4) -> list[dict[str, Any]]:
    return [
        {"id": f"a{i}", "features": [{"item": {"topic": f"t{i % 3}", "len": 100 + i}}]}
        for i in range(n)
    ]


def native_actions(n: int = 4) -> list[dict[str, Any]]:
    return [
        {"id": f"a{i}", "features": {"item": {"topic": f"t{i % 3}", "len": 100 + i}}}
        for i in range(n)
    ]


def settings_at(root: Path, **extra: Any) -> Settings:
    data: dict[str, Any] = {
        "storage": {"root": str(root)},
        "logging": {"level": "WARNING", "format": "text"},
        **extra,
    }
    config = root.parent / f"{root.name}.yaml"
    config.write_bytes(orjson.dumps(data))
    return load_settings(config, env={})


@contextmanager
def running(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def clone_root(source: Path, dest: Path) -> None:
    """A second storage root with the same registry (same model ids), and no events."""
    shutil.copytree(source / "models", dest / "models")


def without_ts(line: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in line.items() if k != "Timestamp"}


def decisions(settings: Settings) -> list[dict[str, Any]]:
    return [without_ts(d) for d in logged(settings.storage.root, "decisions")]


def outcomes(settings: Settings) -> list[dict[str, Any]]:
    return [without_ts(d) for d in logged(settings.storage.root, "outcomes")]


def joined_lines(settings: Settings, experiment: str = "default") -> list[dict[str, Any]]:
    """Ingest and join everything logged (window closed), the exported lines without times."""
    store = open_store(settings.storage)
    con = connect(settings.warehouse)
    try:
        ingest(con, store)
        result = run_join(
            con,
            store,
            experiment,
            settings.experiment(experiment),
            as_of=utcnow_naive() + timedelta(hours=2),
        )
    finally:
        con.close()
    lines = []
    for key in (result.train_key, result.eval_key):
        lines += [orjson.loads(raw) for raw in store.get_bytes(key).splitlines() if raw]
    return sorted((without_ts(x) for x in lines), key=lambda x: str(x["EventId"]))
