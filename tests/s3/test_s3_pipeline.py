"""The pipeline on the S3 backend: segments in from the bucket, exports and models out to it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from cbloop.clock import format_ts
from cbloop.encoding import decision_line
from cbloop.eventlog import SegmentWriter
from cbloop.eventlog.shipper import make_shipper
from cbloop.registry import ModelRegistry
from cbloop.storage.s3 import S3Store

from .conftest import S3SettingsFactory

ingest_module = pytest.importorskip("cbloop_pipeline.ingest")
warehouse = pytest.importorskip("cbloop_pipeline.warehouse")

FLUSH_S = 30.0
CRASH_CODE = 86

CRASH_AFTER_UPLOAD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from cbloop.eventlog.shipper import make_shipper
    from cbloop.settings import load_settings

    shipper = make_shipper(load_settings(Path(sys.argv[1]), env={}))
    upload = shipper.store.put_file

    def upload_then_die(key, path):
        upload(key, path)
        os._exit(int(sys.argv[2]))  # in the bucket, not yet removed from the spool

    shipper.store.put_file = upload_then_die
    shipper.start()
    shipper.flush(30)
    """
)

C_JSON = orjson.dumps(
    {"user": {"city": "paris"}, "_multi": [{"ActionId": {"id": "x"}}, {"ActionId": {"id": "y"}}]}
)


def a_decision(n: int) -> bytes:
    return decision_line(
        event_id=f"e-{n}",
        ts=format_ts(),
        order=[n % 2, 1 - n % 2],
        probabilities=[0.5, 0.5],
        c_json=C_JSON,
        experiment="default",
        model_id="m-test",
        action_ids=["x", "y"],
        sample_prob=(n % 10) / 10,
        deferred=False,
    )


def spooled(root: Path) -> list[Path]:
    return sorted((root / "events").rglob("*.jsonl"))


def decision_counts(settings: Any) -> tuple[int, int]:
    con = warehouse.connect(settings.warehouse)
    try:
        row = con.execute("SELECT count(*), count(DISTINCT event_id) FROM decisions").fetchone()
    finally:
        con.close()
    assert row is not None
    return int(row[0]), int(row[1])


def ingest_once(settings: Any) -> Any:
    con = warehouse.connect(settings.warehouse)
    try:
        return ingest_module.ingest(con, S3Store.from_settings(settings.storage.s3))
    finally:
        con.close()


def test_a_crash_between_upload_and_local_delete_loses_nothing_and_ingests_nothing_twice(
    make_s3_settings: S3SettingsFactory, tmp_path: Path
) -> None:
    settings = make_s3_settings()
    root = settings.storage.root
    writer = SegmentWriter(root, "decisions", settings.eventlog)
    writer.start()
    lines = [a_decision(n) for n in range(25)]
    for line in lines:
        writer.append(line)
    writer.close()
    [segment] = spooled(root)
    key = segment.relative_to(root).as_posix()

    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_UPLOAD, str(tmp_path / "config.yaml"), str(CRASH_CODE)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert crashed.returncode == CRASH_CODE, crashed.stderr.decode()
    store = S3Store.from_settings(settings.storage.s3)
    assert store.stat(key) is not None
    assert segment.exists()

    # The pipeline may well load the segment before the service comes back ...
    assert ingest_once(settings).decision_lines == 25

    # ... and the restarted service uploads it again, to the same key.
    restarted = make_shipper(settings)
    assert restarted is not None
    restarted.start()
    try:
        assert restarted.flush(FLUSH_S)
    finally:
        restarted.close()
    assert restarted.shipped == 1
    assert spooled(root) == []
    assert [info.key for info in store.list("events/")] == [key]
    assert store.get_bytes(key) == b"".join(lines)

    assert ingest_once(settings).segments == 0
    assert decision_counts(settings) == (25, 25)


def test_the_loop_reads_segments_from_the_bucket_and_writes_exports_and_models_there(
    make_s3_settings: S3SettingsFactory,
) -> None:
    service_app = pytest.importorskip("cbloop_service.app")
    loop = pytest.importorskip("cbloop_pipeline.loop")
    settings = make_s3_settings(
        eventlog={"fsync": "never"},
        experiments={
            "default": {
                "reward": {"wait_seconds": 0.2, "backward_seconds": 0},
                "promotion": {"min_events": 0},
            }
        },
    )
    actions = [{"id": a, "features": {"item": {"name": a}}} for a in ("x", "y", "z")]
    with TestClient(service_app.create_app(settings)) as client:
        for n in range(60):
            body = {"event_id": f"e-{n}", "context": {"user": {"n": n % 3}}, "actions": actions}
            answer = client.post("/v1/rank", json=body)
            assert answer.status_code == 200, answer.text
            if answer.json()["action_id"] == "x":
                client.post(f"/v1/events/e-{n}/reward", json={"value": 1.0})
    # Leaving the client closed the log and shipped every segment.
    assert spooled(settings.storage.root) == []
    time.sleep(0.3)  # let the last reward window (wait_seconds) close before the join

    report = loop.run_cycle(settings, "default")
    steps = {step.step: step.status for step in report.steps}
    assert steps["ingest"] == "done"
    assert steps["join"] == "done"
    assert steps["train"] == "done"
    assert decision_counts(settings) == (60, 60)

    store = S3Store.from_settings(settings.storage.s3)
    joined = [info.key for info in store.list("joined/default/")]
    assert any(k.endswith("/train.dsjson") for k in joined)
    assert any(k.endswith("/eval.dsjson") for k in joined)
    assert any(k.endswith("/manifest.json") for k in joined)
    exported = b"".join(store.get_bytes(k) for k in joined if k.endswith(".dsjson"))
    assert len(exported.splitlines()) == 60
    registry = ModelRegistry(store)
    assert len(registry.list_models("default")) == 2  # the initial model and the trained one
    # Nothing but the (empty) spool and the warehouse stays on local disk.
    local = {p.name for p in settings.storage.root.iterdir()}
    assert "joined" not in local
    assert "models" not in local
    assert settings.warehouse.path.exists()

    again = loop.run_cycle(settings, "default")
    assert {s.step: s.status for s in again.steps}["ingest"] == "skipped"
