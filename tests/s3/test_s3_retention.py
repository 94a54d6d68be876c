"""Retention on the S3 backend (moto's real S3 server): what goes, what stays, by real ages."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from cbloop import clock
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage.s3 import S3Store
from cbloop_pipeline import loop
from cbloop_pipeline.deploy import deploy
from cbloop_pipeline.ingest import ingest
from cbloop_pipeline.join import run_join
from cbloop_pipeline.retention import collect
from cbloop_pipeline.warehouse import connect
from cbloop_service.app import create_app

from .conftest import S3SettingsFactory

ACTIONS = [{"id": a, "features": {"item": {"name": a}}} for a in ("x", "y", "z")]


def _serve(settings: Settings, batch: str, n: int = 30) -> None:
    with TestClient(create_app(settings)) as client:
        for i in range(n):
            body = {
                "event_id": f"{batch}-{i}",
                "context": {"user": {"n": i % 3}},
                "actions": ACTIONS,
            }
            answer = client.post("/v1/rank", json=body)
            assert answer.status_code == 200, answer.text
            if answer.json()["action_id"] == "x":
                client.post(f"/v1/events/{batch}-{i}/reward", json={"value": 1.0})
    # Leaving the client closed the log and shipped every segment to the bucket.
    time.sleep(0.3)  # the reward windows close


def _keys(store: S3Store, prefix: str) -> set[str]:
    return {o.key for o in store.list(prefix)}


def _newest_served(settings: Settings, registry: ModelRegistry) -> None:
    newest = registry.list_models("default")[-1]
    pointer = registry.current("default")
    if pointer is None or pointer.model_id != newest.model_id:
        deploy(
            registry,
            "default",
            settings.experiment("default"),
            model_id=newest.model_id,
            force=True,
        )


def _gc(settings: Settings, store: S3Store, **later: Any) -> Any:
    con = connect(settings.warehouse)
    try:
        return collect(con, store, settings, now=clock.now() + timedelta(**later))
    finally:
        con.close()


def test_retention_on_s3_deletes_old_joined_data_and_unserved_models_only(
    make_s3_settings: S3SettingsFactory,
) -> None:
    settings = make_s3_settings(
        eventlog={"fsync": "never"},
        retention={
            "joined_segments_days": 1,
            "exports_days": 1,
            "evaluations_days": 1,
            "models_days": 1,
        },
        experiments={
            "default": {
                "reward": {"wait_seconds": 0.2, "backward_seconds": 0},
                "promotion": {"min_events": 0},
            }
        },
    )
    store = S3Store.from_settings(settings.storage.s3)
    registry = ModelRegistry(store)

    # Two cycles, each learning a batch; the newest model is served after each.
    _serve(settings, "one")
    loop.run_cycle(settings, "default")
    _newest_served(settings, registry)
    _serve(settings, "two")
    loop.run_cycle(settings, "default")
    _newest_served(settings, registry)
    learned_segments = _keys(store, "events/")
    learned_exports = _keys(store, "joined/")
    evaluation_files = _keys(store, "evaluations/")
    # A third batch joined but not learned, a fourth ingested but not joined.
    _serve(settings, "three")
    con = connect(settings.warehouse)
    try:
        ingest(con, store)
        unlearned = run_join(con, store, "default", settings.experiment("default"))
    finally:
        con.close()
    joined_segments = _keys(store, "events/")
    _serve(settings, "four")
    con = connect(settings.warehouse)
    try:
        ingest(con, store)
    finally:
        con.close()
    unjoined = _keys(store, "events/") - joined_segments
    assert learned_segments and unjoined and evaluation_files and unlearned.joined == 30
    m0, m1, m2 = registry.list_models("default")
    before = _keys(store, "")
    cache = settings.warehouse.path.with_name(settings.warehouse.path.name + ".segments")
    assert all((cache / key).is_file() for key in joined_segments)

    # Now, everything is younger than a day: nothing goes.
    assert _gc(settings, store, seconds=0).items == []
    assert _keys(store, "") == before

    # Two days on: the joined segments, learned exports, evaluation files and the file of
    # the model neither served nor the rollback target go; nothing else.
    result = _gc(settings, store, days=2)
    gone = before - _keys(store, "")
    assert {d.kind for d in result.items} == {"segment", "export", "evaluation", "model"}
    assert gone == (
        joined_segments
        | learned_exports
        | evaluation_files
        | {f"models/default/{m0.model_id}/model.vw"}
    )
    assert not any((cache / key).exists() for key in joined_segments)
    assert unjoined <= _keys(store, "events/")
    assert {k.split("/")[2] for k in _keys(store, "joined/")} == {unlearned.join_id}
    assert store.stat(f"models/default/{m1.model_id}/model.vw") is not None
    assert store.stat(f"models/default/{m2.model_id}/model.vw") is not None
    assert registry.metadata("default", m0.model_id).file_deleted_at is not None

    # Nothing is deleted twice, and the loop still runs: it learns the kept join.
    assert _gc(settings, store, days=2).items == []
    report = loop.run_cycle(settings, "default")
    steps = {s.step: s.status for s in report.steps}
    assert steps["train"] == "done" and "failed" not in steps.values()
