"""Soft deployment: workers poll the current pointer, check new models and swap or refuse."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_helpers import ClientFactory, app_settings, publish_model, rank_body, train_model

from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store

POLL = {"service": {"model_poll_seconds": 0.05}}
# Generous: only a broken watcher takes this long; a working one needs a few polls.
DEADLINE_S = 20.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def served_model(client: TestClient) -> str:
    answer = client.post("/v1/rank", json=rank_body())
    assert answer.status_code == 200
    model_id: str = answer.json()["model_id"]
    return model_id


def registry_of(client: TestClient) -> ModelRegistry:
    return ModelRegistry(open_store(app_settings(client).storage))


def garbage_model(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.vw"
    path.write_bytes(b"definitely not a VW model\n" * 20)
    return path


@pytest.fixture
def polling(make_client: ClientFactory) -> TestClient:
    return make_client(**POLL)


def test_new_current_model_is_swapped_in_and_answers_carry_its_id(polling: TestClient) -> None:
    old = served_model(polling)
    new = publish_model(app_settings(polling), train_model(app_settings(polling)))
    assert new != old
    wait_for(lambda: served_model(polling) == new, "the new model to serve")
    info = polling.get("/v1/experiments/default/model").json()
    assert info["model_id"] == info["pointer_model_id"] == new
    metrics = polling.get("/metrics").text
    assert f'cbloop_model_info{{experiment="default",model_id="{new}"}} 1.0' in metrics
    assert f'model_id="{old}"' not in metrics
    assert 'cbloop_model_swaps_total{experiment="default"} 1.0' in metrics


def test_corrupted_model_is_refused_and_the_old_one_keeps_serving(
    polling: TestClient, tmp_path: Path
) -> None:
    old = served_model(polling)
    bad = publish_model(app_settings(polling), garbage_model(tmp_path))
    registry = registry_of(polling)
    wait_for(lambda: registry.metadata("default", bad).state == "refused", "the refusal")
    assert served_model(polling) == old
    meta = registry.metadata("default", bad)
    (entry,) = [h for h in meta.history if h["what"] == "refused"]
    assert "could not load" in entry["reason"]
    info = polling.get("/v1/experiments/default/model").json()
    assert info["model_id"] == old
    assert info["pointer_model_id"] == bad
    assert [r["model_id"] for r in info["refused"]] == [bad]
    assert 'cbloop_model_refusals_total{experiment="default"} 1.0' in polling.get("/metrics").text

    # A good model deployed afterwards is taken as usual.
    good = publish_model(app_settings(polling), train_model(app_settings(polling)))
    wait_for(lambda: served_model(polling) == good, "the next good model")


def test_model_with_other_vw_args_is_refused(polling: TestClient) -> None:
    old = served_model(polling)
    settings = app_settings(polling)
    other = publish_model(settings, train_model(settings), vw_args="--cb_explore_adf --epsilon 0.5")
    registry = registry_of(polling)
    wait_for(lambda: registry.metadata("default", other).state == "refused", "the refusal")
    reason = registry.metadata("default", other).history[-1]["reason"]
    assert "vw_args" in reason
    assert served_model(polling) == old


def test_model_whose_file_is_missing_is_refused(polling: TestClient) -> None:
    old = served_model(polling)
    settings = app_settings(polling)
    missing = publish_model(settings, train_model(settings), make_current=False)
    (settings.storage.root / "models" / "default" / missing / "model.vw").unlink()
    registry = registry_of(polling)
    registry.set_current("default", missing, reason="test")
    wait_for(lambda: registry.metadata("default", missing).state == "refused", "the refusal")
    assert served_model(polling) == old


def test_worker_starting_on_a_refused_pointer_serves_the_previous_model(
    make_settings: Callable[..., Settings], make_client: ClientFactory, tmp_path: Path
) -> None:
    settings = make_settings(**POLL)
    registry = ModelRegistry(open_store(settings.storage))
    first = registry.ensure_initial_model("default", settings.experiment("default")).model_id
    bad = publish_model(settings, garbage_model(tmp_path))

    one = make_client(**POLL)
    assert served_model(one) == first
    wait_for(lambda: registry.metadata("default", bad).state == "refused", "the refusal")
    # A second worker refuses the same model again; the record stays a single refusal.
    two = make_client(**POLL)
    assert served_model(two) == first
    info = two.get("/v1/experiments/default/model").json()
    assert [r["model_id"] for r in info["refused"]] == [bad]
    assert info["pointer_model_id"] == bad
    refusals = [h for h in registry.metadata("default", bad).history if h["what"] == "refused"]
    assert len(refusals) == 1


def test_rollback_to_a_previous_model_is_swapped_in(polling: TestClient) -> None:
    settings = app_settings(polling)
    first = served_model(polling)
    second = publish_model(settings, train_model(settings))
    wait_for(lambda: served_model(polling) == second, "the second model")
    registry_of(polling).set_current("default", first, reason="rollback")
    wait_for(lambda: served_model(polling) == first, "the rolled-back model")
