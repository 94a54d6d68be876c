"""Retention on the local backend: `cbloop loop` after each cycle and `cbloop gc`.

Events come through the real service (HTTP, real segment files), the loop runs for real (VW,
DuckDB, OPE), and what retention deletes is checked on disk.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
from cli_helpers import CliRun, write_config
from fastapi.testclient import TestClient

from cbloop import clock
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings, load_settings
from cbloop.storage import LocalStore
from cbloop_pipeline.lock import exclusive_lock
from cbloop_pipeline.retention import collect
from cbloop_pipeline.warehouse import connect
from cbloop_service.app import create_app

ACTIONS = [{"id": a, "features": {"item": {"kind": a}}} for a in ("news", "sports", "food")]


def _serve(settings: Settings, batch: str, n: int = 30) -> None:
    """n decisions through the service, rewarded when it picked "news"; stopped afterwards."""
    with TestClient(create_app(settings)) as client:
        for i in range(n):
            body = {
                "event_id": f"{batch}-{i}",
                "context": {"user": {"age": i % 3}},
                "actions": ACTIONS,
            }
            answer = client.post("/v1/rank", json=body)
            assert answer.status_code == 200, answer.text
            if answer.json()["action_id"] == "news":
                client.post(f"/v1/events/{batch}-{i}/reward", json={"value": 1.0})
    time.sleep(0.3)  # the reward windows (wait_seconds 0.2) close


def _serve_newest(run_cli: CliRun, config: Path, registry: ModelRegistry) -> bool:
    """Deploy the newest model by hand when the promotion rule kept the old one (small
    batches give wide intervals); True when it had to."""
    newest = registry.list_models("default")[-1]
    pointer = registry.current("default")
    if pointer is not None and pointer.model_id == newest.model_id:
        return False
    deployed = run_cli(config, "deploy", "--model", newest.model_id, "--force")
    assert deployed.exit_code == 0, deployed.output
    return True


def _segments(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / "events").rglob("*.jsonl")}


def _config(tmp_path: Path, **retention: Any) -> Path:
    return write_config(
        tmp_path / "config.yaml",
        {
            "storage": {"root": str(tmp_path / "data")},
            "logging": {"format": "text"},
            "retention": retention,
            "experiments": {
                "default": {
                    "reward": {"wait_seconds": 0.2, "backward_seconds": 0},
                    "promotion": {"min_events": 0},
                }
            },
        },
    )


def _query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(settings.warehouse.path), read_only=True)
    try:
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def test_the_loop_deletes_what_retention_allows_and_keeps_unjoined_segments_and_live_models(
    tmp_path: Path, run_cli: CliRun
) -> None:
    config = _config(
        tmp_path, joined_segments_days=0, exports_days=0, evaluations_days=0, models_days=0
    )
    settings = load_settings(config, env={})
    root = settings.storage.root
    registry = ModelRegistry(LocalStore(root))

    _serve(settings, "first")
    first_segments = _segments(root)
    assert first_segments
    cycle = run_cli(config, "loop", "--once")
    assert cycle.exit_code == 0, cycle.output
    assert "retention: deleted" in cycle.stdout
    _serve_newest(run_cli, config, registry)
    # Everything of the first batch was joined, so its segments went; so did the export the
    # newest model learned and the evaluation files (their figures stay in the warehouse).
    assert _segments(root) & first_segments == set()
    assert list((root / "joined" / "default").glob("*/train.dsjson")) == []
    assert list((root / "evaluations").rglob("*.parquet")) == []
    assert _query(settings, "SELECT count(*) FROM evaluations") == [(1,)]
    assert _query(settings, "SELECT count(*) FROM decisions") == [(30,)]

    # A second batch, ingested but not joined: gc must keep its segments.
    _serve(settings, "second")
    second_segments = _segments(root)
    assert run_cli(config, "ingest").exit_code == 0
    dry = run_cli(config, "gc", "--dry-run")
    real = run_cli(config, "gc")
    assert dry.exit_code == 0 and real.exit_code == 0, dry.output + real.output
    assert "would delete 0 segments" in dry.stdout and "deleted 0 segments" in real.stdout
    assert _segments(root) == second_segments

    # The next cycle joins and learns them; three models now: the first one served (m0),
    # the first trained (m1, served since) and the second trained (m2), served next.
    again = run_cli(config, "loop", "--once")
    assert again.exit_code == 0, again.output
    assert _segments(root) & second_segments == set()
    m0, m1, m2 = registry.list_models("default")
    if _serve_newest(run_cli, config, registry):
        assert run_cli(config, "gc").exit_code == 0

    # m2 is served and m1 is the rollback target: both stay; m0's file went, its metadata
    # (and so every lineage) stays.
    models = root / "models" / "default"
    assert (models / m2.model_id / "model.vw").is_file()
    assert (models / m1.model_id / "model.vw").is_file()
    assert not (models / m0.model_id / "model.vw").exists()
    assert registry.metadata("default", m0.model_id).file_deleted_at is not None
    back = run_cli(config, "rollback")
    assert back.exit_code == 0, back.output
    assert f"rolled back to {m1.model_id}" in back.stdout


def test_gc_keeps_everything_younger_than_the_retention_and_deletes_it_once_older(
    tmp_path: Path, run_cli: CliRun
) -> None:
    config = _config(tmp_path, joined_segments_days=1, exports_days=2, evaluations_days=2)
    settings = load_settings(config, env={})
    root = settings.storage.root
    _serve(settings, "batch")
    assert run_cli(config, "loop", "--once").exit_code == 0
    segments = _segments(root)
    exports = sorted((root / "joined" / "default").glob("*/train.dsjson"))
    assert segments and exports

    now = run_cli(config, "gc", "--dry-run")
    assert "would delete 0 segments, 0 exports, 0 evaluations, 0 models" in now.stdout

    store = LocalStore(root)
    con = connect(settings.warehouse)
    try:
        in_a_day = collect(con, store, settings, now=clock.now() + timedelta(days=1, hours=1))
        in_three = collect(con, store, settings, now=clock.now() + timedelta(days=3))
    finally:
        con.close()
    assert {d.kind for d in in_a_day.items} == {"segment"}
    assert _segments(root) == set()
    assert {d.kind for d in in_three.items} == {"export", "evaluation"}
    assert list((root / "joined" / "default").glob("*/train.dsjson")) == []
    # The loop goes on without the deleted exports: nothing new to train on, no failure.
    after = run_cli(config, "loop", "--once")
    assert after.exit_code == 0, after.output
    assert "failed" not in after.stdout


def test_gc_waits_its_turn_while_a_loop_holds_the_lock(tmp_path: Path, run_cli: CliRun) -> None:
    config = _config(tmp_path, exports_days=0)
    settings = load_settings(config, env={})

    with exclusive_lock(settings.pipeline.lock_path):
        held = run_cli(config, "gc")
    free = run_cli(config, "gc", "--dry-run")

    assert held.exit_code == 3
    assert "another learning loop holds" in held.stderr
    assert free.exit_code == 0 and "would delete 0 segments" in free.stdout


def test_gc_with_every_retention_unset_deletes_nothing(tmp_path: Path, run_cli: CliRun) -> None:
    config = _config(tmp_path)

    result = run_cli(config, "gc")

    assert result.exit_code == 0
    assert "keep forever" in result.stdout
