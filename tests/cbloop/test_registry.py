"""Model registry on a local store: models, metadata, the current pointer, bootstrap."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from cbloop.registry import ModelMetadata, ModelRegistry, RegistryError
from cbloop.settings import ExperimentSettings
from cbloop.storage import LocalStore
from cbloop.vw import ModelLoadError, open_workspace

PREDICT = '{"a":[1],"c":{"u":{"x":1},"_multi":[{"A":{"id":"a"}},{"A":{"id":"b"}}]}}'
LEARN = (
    '{"_label_cost":-1,"_label_probability":0.5,"_label_Action":2,"_labelIndex":1,'
    '"a":[2,1],"p":[0.5,0.5],"c":{"u":{"x":1},"_multi":[{"A":{"id":"a"}},{"A":{"id":"b"}}]}}'
)
EXPERIMENT = ExperimentSettings.model_validate(
    {"vw_args": "-b 16", "exploration": {"type": "egreedy", "epsilon": 0.1}}
)


@pytest.fixture
def registry(tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(LocalStore(tmp_path / "store"))


def _trained_model(path: Path, steps: int) -> Path:
    ws = open_workspace(EXPERIMENT.vw_arguments())
    for _ in range(steps):
        ws.learn(LEARN)
    ws.save(str(path))
    ws.finish()
    return path


def _save(
    registry: ModelRegistry, tmp_path: Path, model_id: str, created_at: str, steps: int = 0
) -> ModelMetadata:
    model = _trained_model(tmp_path / f"{model_id}.vw", steps)
    meta = ModelMetadata(
        model_id=model_id,
        experiment="default",
        vw_args=EXPERIMENT.vw_arguments(),
        created_at=created_at,
    )
    return registry.save(model, meta)


def _predict(vw_args: str, model: Path) -> list[float]:
    ws = open_workspace(vw_args, model)
    try:
        return list(ws.predict(PREDICT))
    finally:
        ws.finish()


# ------------------------------------------------------------------------- bootstrap


def test_ensure_initial_model_creates_a_loadable_model_and_points_at_it(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    assert registry.current("default") is None
    pointer = registry.ensure_initial_model("default", EXPERIMENT)
    assert registry.current("default") == pointer
    assert pointer.previous is None
    assert pointer.reason == "initial model"

    meta = registry.metadata("default", pointer.model_id)
    assert meta.state == "deployed"
    assert meta.vw_args == EXPERIMENT.vw_arguments()
    assert [h["what"] for h in meta.history] == ["created"]

    model = registry.fetch("default", pointer.model_id, tmp_path)
    pmf = _predict(meta.vw_args, model)
    assert pmf == pytest.approx([0.5, 0.5])


def test_ensure_initial_model_keeps_an_existing_pointer(registry: ModelRegistry) -> None:
    first = registry.ensure_initial_model("default", EXPERIMENT)
    second = registry.ensure_initial_model("default", EXPERIMENT)
    assert second == first
    assert len(registry.list_models("default")) == 1


def test_experiments_are_kept_apart(registry: ModelRegistry) -> None:
    news = registry.ensure_initial_model("news", EXPERIMENT)
    shop = registry.ensure_initial_model("shop", EXPERIMENT)
    assert news.model_id != shop.model_id
    assert [m.model_id for m in registry.list_models("news")] == [news.model_id]
    with pytest.raises(RegistryError):
        registry.set_current("shop", news.model_id, reason="wrong experiment")


def test_new_model_ids_are_unique_and_path_safe() -> None:
    ids = {ModelRegistry.new_model_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(re.fullmatch(r"m-\d{8}T\d{6}-[0-9a-f]{6}", i) for i in ids)


# --------------------------------------------------------------------------- models


def test_saved_model_round_trips_its_weights(registry: ModelRegistry, tmp_path: Path) -> None:
    meta = _save(registry, tmp_path, "m-trained", "2026-01-01T00:00:00.000000Z", steps=20)
    fetched = registry.fetch("default", meta.model_id, tmp_path / "dl")
    pmf = _predict(meta.vw_args, fetched)
    assert pmf[1] > 0.9  # the learned preference survived the trip


def test_fetch_copies_when_the_store_has_no_local_files(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    class RemoteLike(LocalStore):
        def local_path(self, key: str) -> Path | None:
            return None

    meta = _save(registry, tmp_path, "m-1", "2026-01-01T00:00:00.000000Z", steps=20)
    remote = ModelRegistry(RemoteLike(tmp_path / "store"))
    dest_dir = tmp_path / "cache"
    fetched = remote.fetch("default", "m-1", dest_dir)
    assert fetched.parent == dest_dir
    assert _predict(meta.vw_args, fetched)[1] > 0.9
    with pytest.raises(RegistryError, match="missing"):
        remote.fetch("default", "m-none", dest_dir)


def test_fetch_of_a_missing_model_file_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="missing"):
        registry.fetch("default", "m-none", tmp_path)


def test_metadata_round_trips_with_extra_fields(registry: ModelRegistry, tmp_path: Path) -> None:
    meta = _save(registry, tmp_path, "m-1", "2026-01-01T00:00:00.000000Z")
    meta.parent_id = "m-0"
    meta.joins = ["j-1", "j-2"]
    meta.events_trained = 1234
    meta.progressive_loss = -0.25
    meta.evaluations = [{"estimator": "dr", "value": 0.31, "ci": [0.2, 0.4]}]
    meta.record("evaluated", estimator="dr")
    extra = meta.model_copy(update={"warm_start": "previous"})
    registry.update_metadata(extra)

    loaded = registry.metadata("default", "m-1")
    assert loaded == extra
    assert loaded.model_dump()["warm_start"] == "previous"
    assert loaded.history[-1]["what"] == "evaluated"
    assert loaded.history[-1]["estimator"] == "dr"


def test_metadata_of_an_unknown_model_is_refused(registry: ModelRegistry) -> None:
    with pytest.raises(RegistryError, match="'m-none'"):
        registry.metadata("default", "m-none")


def test_unreadable_metadata_is_refused_and_skipped_in_listings(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    _save(registry, tmp_path, "m-good", "2026-01-01T00:00:00.000000Z")
    registry.store.put_bytes("models/default/m-bad/metadata.json", b'{"model_id": 1}')
    with pytest.raises(RegistryError, match="unreadable"):
        registry.metadata("default", "m-bad")
    assert [m.model_id for m in registry.list_models("default")] == ["m-good"]


def test_list_models_is_in_creation_order(registry: ModelRegistry, tmp_path: Path) -> None:
    _save(registry, tmp_path, "m-c", "2026-01-01T00:00:00.000002Z")
    _save(registry, tmp_path, "m-a", "2026-01-01T00:00:00.000003Z")
    _save(registry, tmp_path, "m-b", "2026-01-01T00:00:00.000001Z")
    assert [m.model_id for m in registry.list_models("default")] == ["m-b", "m-c", "m-a"]
    assert registry.list_models("empty") == []


def test_list_models_ignores_the_pointer_and_model_files(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    _save(registry, tmp_path, "m-1", "2026-01-01T00:00:00.000000Z")
    registry.set_current("default", "m-1", reason="test")
    assert [m.model_id for m in registry.list_models("default")] == ["m-1"]


# -------------------------------------------------------------------------- pointer


def test_set_current_records_the_previous_model_and_the_reason(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    _save(registry, tmp_path, "m-1", "2026-01-01T00:00:00.000000Z")
    _save(registry, tmp_path, "m-2", "2026-01-02T00:00:00.000000Z")
    first = registry.set_current("default", "m-1", reason="deploy")
    assert first.previous is None
    second = registry.set_current("default", "m-2", reason="promoted: dr +0.02")
    assert (second.model_id, second.previous, second.reason) == ("m-2", "m-1", "promoted: dr +0.02")
    assert registry.current("default") == second
    back = registry.set_current("default", second.previous or "", reason="rollback")
    assert (back.model_id, back.previous) == ("m-1", "m-2")


def test_set_current_to_an_unknown_model_is_refused_and_keeps_the_pointer(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    _save(registry, tmp_path, "m-1", "2026-01-01T00:00:00.000000Z")
    pointer = registry.set_current("default", "m-1", reason="deploy")
    version = registry.pointer_version("default")
    with pytest.raises(RegistryError, match="'m-nope'"):
        registry.set_current("default", "m-nope", reason="typo")
    assert registry.current("default") == pointer
    assert registry.pointer_version("default") == version


def test_pointer_version_changes_exactly_when_the_pointer_changes(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    assert registry.pointer_version("default") is None
    _save(registry, tmp_path, "m-1", "2026-01-01T00:00:00.000000Z")
    _save(registry, tmp_path, "m-2", "2026-01-02T00:00:00.000000Z")
    registry.set_current("default", "m-1", reason="deploy")
    seen = [registry.pointer_version("default")]
    assert seen[0] is not None
    assert registry.pointer_version("default") == seen[0]
    for target in ("m-2", "m-1", "m-2"):
        registry.set_current("default", target, reason="flip")
        seen.append(registry.pointer_version("default"))
    assert all(a != b for a, b in itertools.pairwise(seen))


def test_unreadable_pointer_is_an_error(registry: ModelRegistry) -> None:
    registry.store.put_bytes(ModelRegistry.pointer_key("default"), b"not json")
    with pytest.raises(RegistryError, match="pointer"):
        registry.current("default")


# ----------------------------------------------------------------------------- vw.py


def test_corrupt_model_file_fails_to_load_with_model_load_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.vw"
    bad.write_bytes(b"\x00not a model")
    with pytest.raises(ModelLoadError, match=r"bad\.vw"):
        open_workspace(EXPERIMENT.vw_arguments(), bad)
