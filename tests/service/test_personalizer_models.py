"""Personalizer's /model routes: export, import (checked as a worker checks) and reset."""

from __future__ import annotations

import tempfile
from pathlib import Path

import vowpalwabbit
from fastapi.testclient import TestClient
from personalizer_helpers import CONTEXT, PERSONALIZER_RANK, actions
from service_helpers import ClientFactory, publish_model, train_model

from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store

MODEL = "/personalizer/v1.0/model"


def _settings(client: TestClient) -> Settings:
    settings: Settings = client.app.state.service.settings  # type: ignore[attr-defined]
    return settings


def _registry(client: TestClient) -> ModelRegistry:
    return ModelRegistry(open_store(_settings(client).storage))


def _probabilities(client: TestClient, event_id: str) -> list[float]:
    body = {"contextFeatures": CONTEXT, "actions": actions(), "eventId": event_id}
    r = client.post(PERSONALIZER_RANK, json=body)
    assert r.status_code == 201, r.text
    return [a["probability"] for a in sorted(r.json()["ranking"], key=lambda a: a["id"])]


def _served_model(client: TestClient) -> str:
    return str(client.get("/v1/experiments/default/model").json()["model_id"])


def _wait_for_swap(client: TestClient, model_id: str) -> None:
    watcher = client.app.state.service.watcher  # type: ignore[attr-defined]
    holder = client.app.state.service.policies.get("default")  # type: ignore[attr-defined]
    watcher.poll(holder)  # the watcher's own poll, now rather than within model_poll_seconds
    assert _served_model(client) == model_id


def test_export_then_import_round_trips_the_served_model(make_client: ClientFactory) -> None:
    client = make_client()
    settings = _settings(client)
    trained = publish_model(settings, train_model(settings))
    _wait_for_swap(client, trained)
    before = _probabilities(client, "probe-1")
    assert max(before) > 0.5  # trained: the pmf is skewed

    exported = client.get(MODEL)
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/octet-stream"
    assert exported.headers["x-cbloop-model-id"] == trained

    assert client.delete(MODEL).status_code == 204  # reset: a fresh untrained model
    fresh = _registry(client).current("default")
    assert fresh is not None and fresh.model_id != trained
    _wait_for_swap(client, fresh.model_id)
    assert _probabilities(client, "probe-1") != before

    imported = client.put(
        MODEL, content=exported.content, headers={"content-type": "application/octet-stream"}
    )
    assert imported.status_code == 204, imported.text
    pointer = _registry(client).current("default")
    assert pointer is not None and pointer.model_id not in (trained, fresh.model_id)
    _wait_for_swap(client, pointer.model_id)
    assert _probabilities(client, "probe-1") == before
    again = client.get(MODEL)
    assert again.content == exported.content

    props = client.get(f"{MODEL}/properties").json()
    assert set(props) == {"creationTime", "lastModifiedTime"}


def _model_file(args: str) -> bytes:
    workspace = vowpalwabbit.Workspace(arg_list=[*args.split(), "--quiet"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.vw"
        workspace.save(str(path))
        workspace.finish()
        return path.read_bytes()


def test_an_incompatible_model_is_refused_and_nothing_changes(client: TestClient) -> None:
    pointer = _registry(client).current("default")
    assert pointer is not None
    # Personalizer's usual policy: it loads under cbloop's arguments, but would serve wrongly.
    personalizer_style = _model_file(
        "--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 --cb_type mtr -q ::"
    )
    r = client.put(MODEL, content=personalizer_style)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "BadRequest"
    assert error["innerError"] == {"code": "InvalidModelImportFormat"}
    assert "--epsilon" in error["message"] and "--quadratic" in error["message"]
    other_bits = _model_file("--cb_explore_adf --interactions :A -b 16 --squarecb --gamma_scale 10")
    r = client.put(MODEL, content=other_bits)
    assert r.status_code == 400
    assert "--bit_precision 16" in r.json()["error"]["message"]
    for junk in (b"", b"not a model at all"):
        r = client.put(MODEL, content=junk)
        assert r.status_code == 400
    after = _registry(client).current("default")
    assert after is not None and after.model_id == pointer.model_id
    assert len(_registry(client).list_models("default")) == 1


def test_a_compatible_model_made_elsewhere_is_imported(client: TestClient) -> None:
    args = _settings(client).experiment("default").vw_arguments()
    r = client.put(MODEL, content=_model_file(args))
    assert r.status_code == 204, r.text
    models = _registry(client).list_models("default")
    assert len(models) == 2
    assert models[-1].history[0]["what"] == "imported"


def test_model_routes_need_an_admin_key(make_client: ClientFactory) -> None:
    client = make_client(service={"api_keys": ["c"], "admin_api_keys": ["a"]})
    assert client.get(MODEL, headers={"Ocp-Apim-Subscription-Key": "c"}).status_code == 403
    assert client.delete(MODEL).status_code == 401
    assert client.get(MODEL, headers={"Ocp-Apim-Subscription-Key": "a"}).status_code == 200
