"""The model watcher survives any fault and says when the served model may lag the pointer;
the model route and startup hold up under concurrency and failure."""

from __future__ import annotations

import gc
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import vowpalwabbit
from fastapi.testclient import TestClient
from service_helpers import app_settings, publish_model, train_model
from test_model_swap import garbage_model, registry_of, served_model, wait_for

from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_service.app import create_app


def _metric(client: TestClient, name: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf'^{name}{{experiment="default"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def broken_pointer(polling: TestClient) -> Iterator[Callable[[], None]]:
    """Turn the pointer into a symlink loop (every read of it raises a raw error, not a
    StorageError); the returned function puts the real pointer back."""
    settings = app_settings(polling)
    pointer = settings.storage.root / ModelRegistry.pointer_key("default")
    saved = pointer.read_bytes()

    def repair() -> None:
        if pointer.is_symlink():
            pointer.unlink()
            pointer.write_bytes(saved)

    pointer.unlink()
    os.symlink(pointer.name, pointer)
    yield repair
    repair()


def test_watcher_survives_a_raw_error_reports_it_and_catches_up(
    polling: TestClient, broken_pointer: Callable[[], None]
) -> None:
    old = served_model(polling)
    # Several failed rounds: the thread is still alive and retrying.
    wait_for(lambda: _metric(polling, "cbloop_model_watch_errors_total") >= 3, "3 poll errors")
    info = polling.get("/v1/experiments/default/model").json()
    assert info["model_id"] == old
    assert info["behind_pointer"] is True
    assert info["watch_error"]
    assert info["watch_error_at"]
    assert _metric(polling, "cbloop_model_behind_pointer") == 1.0
    ready = polling.get("/readyz")
    assert ready.status_code == 200  # a checked model still serves: stay in rotation
    assert ready.json()["behind_pointer"] == ["default"]
    assert (
        polling.post("/v1/rank", json={"context": {}, "actions": [{"id": "a"}]}).status_code == 200
    )

    broken_pointer()
    new = publish_model(app_settings(polling), train_model(app_settings(polling)))
    wait_for(lambda: served_model(polling) == new, "the watcher to catch up with the pointer")
    info = polling.get("/v1/experiments/default/model").json()
    assert info["behind_pointer"] is False
    assert info["watch_error"] is None
    assert _metric(polling, "cbloop_model_behind_pointer") == 0.0
    assert polling.get("/readyz").json()["behind_pointer"] == []


def test_model_route_reads_refusals_safely_while_the_watcher_adds_them(
    polling: TestClient, tmp_path: Path
) -> None:
    settings = app_settings(polling)
    registry = registry_of(polling)
    errors: list[BaseException] = []
    statuses: list[int] = []
    stop = threading.Event()

    def read_model_info() -> None:
        while not stop.is_set():
            try:
                statuses.append(polling.get("/v1/experiments/default/model").status_code)
            except Exception as exc:  # noqa: BLE001 - a 500 surfaces here: TestClient re-raises
                errors.append(exc)
                return

    # A tiny switch interval makes a thread switch inside a deque iteration likely.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader = threading.Thread(target=read_model_info)
    reader.start()
    try:
        bad = ""
        for _ in range(12):
            bad = publish_model(settings, garbage_model(tmp_path))
            wait_for(lambda m=bad: registry.metadata("default", m).state == "refused", "refusal")
    finally:
        stop.set()
        reader.join()
        sys.setswitchinterval(interval)
    assert errors == []
    assert statuses and set(statuses) == {200}
    refused = polling.get("/v1/experiments/default/model").json()["refused"]
    assert len(refused) == 10  # the newest ten are kept
    assert refused[-1]["model_id"] == bad


def _unfinished_workspaces() -> set[int]:
    gc.collect()
    return {
        id(o) for o in gc.get_objects() if isinstance(o, vowpalwabbit.Workspace) and not o.finished
    }


def test_startup_failing_halfway_leaves_no_thread_workspace_or_scratch_folder(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch_parent = tmp_path / "tmp"
    scratch_parent.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_parent))
    settings = make_settings(experiments={"default": {}, "second": {}})
    registry = ModelRegistry(open_store(settings.storage))
    for name, experiment in settings.experiments.items():
        registry.ensure_initial_model(name, experiment)
    # The second experiment's pointer is unreadable: startup fails after the event log
    # threads started and the first experiment's workspace loaded.
    pointer = settings.storage.root / ModelRegistry.pointer_key("second")
    pointer.write_bytes(b"{not a pointer")
    threads_before = {t.ident for t in threading.enumerate()}
    workspaces_before = _unfinished_workspaces()

    client = TestClient(create_app(settings))
    with pytest.raises(Exception, match="unreadable"):
        client.__enter__()

    leftover = [t.name for t in threading.enumerate() if t.ident not in threads_before]
    assert not [n for n in leftover if n.startswith(("eventlog-", "model-watcher", "shipper"))]
    assert list(scratch_parent.iterdir()) == []
    assert _unfinished_workspaces() - workspaces_before == set()


@pytest.fixture
def polling(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(service={"model_poll_seconds": 0.05})
