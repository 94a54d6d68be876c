"""The experiment catalog on a local folder and on a real S3-compatible server (moto)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer

from cbloop.experiments import (
    ExperimentCatalog,
    ExperimentConflict,
    ExperimentExists,
    ExperimentNotFound,
    InvalidExperiment,
    resolved_settings,
)
from cbloop.registry import ModelRegistry
from cbloop.settings import S3Settings, Settings
from cbloop.storage import LocalStore, ObjectStore
from cbloop.storage.s3 import S3Store


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
    if server._server is not None:
        server._server.server_close()


@pytest.fixture(params=["local", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    endpoint = request.getfixturevalue("s3_endpoint")
    s3 = S3Store.from_settings(
        S3Settings(
            bucket=f"exp-{uuid.uuid4().hex[:12]}",
            prefix="cbloop",
            endpoint_url=endpoint,
            region="us-east-1",
        )
    )
    s3.ensure_bucket()
    return s3


@pytest.fixture
def catalog(store: ObjectStore) -> ExperimentCatalog:
    return ExperimentCatalog(store)


def test_config_seeds_absent_experiments_once_and_never_overrides_the_store(
    catalog: ExperimentCatalog,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = make_settings(experiments={"news": {"reward": {"wait_seconds": 30}}})
    assert sorted(catalog.seed(first)) == ["default", "news"]
    news = catalog.get("news")
    assert (news.version, news.by) == (1, "config.yaml")
    assert news.experiment().reward.wait_seconds == 30

    edited = make_settings(experiments={"news": {"reward": {"wait_seconds": 99}}, "shop": {}})
    with caplog.at_level(logging.WARNING, logger="cbloop.experiments"):
        assert catalog.seed(edited) == ["shop"]
    assert catalog.get("news").experiment().reward.wait_seconds == 30
    assert [r.version for r in catalog.history("news")] == [1]
    assert any(getattr(r, "experiment", None) == "news" for r in caplog.records)
    assert sorted(resolved_settings(edited, catalog).experiments) == ["default", "news", "shop"]
    resolved = resolved_settings(edited, catalog)
    assert resolved.experiment("news").reward.wait_seconds == 30


def test_update_merges_a_partial_mapping_as_a_new_version_with_who_and_why(
    catalog: ExperimentCatalog,
) -> None:
    catalog.create("home", {"reward": {"wait_seconds": 30, "aggregation": "sum"}}, by="ann")
    updated = catalog.update(
        "home",
        {"reward": {"wait_seconds": 60}},
        by="bob",
        why="slower clicks",
        evidence={"report": "r-7"},
    )
    assert updated.version == 2
    settings = updated.experiment()
    assert settings.reward.wait_seconds == 60
    assert settings.reward.aggregation == "sum"  # the untouched key stays
    history = catalog.history("home")
    assert [(r.version, r.by, r.why) for r in history] == [
        (1, "ann", "created"),
        (2, "bob", "slower clicks"),
    ]
    assert history[1].evidence == {"report": "r-7"} and history[1].at >= history[0].at
    # The same settings again write nothing.
    assert catalog.update("home", {"reward": {"wait_seconds": 60}}, by="bob", why="x").version == 2


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"exploration": {"epsilon": 2}}, "exploration.epsilon"),
        ({"exploration": {"type": "thompson"}}, "exploration.type"),
        ({"vw_args": "--cb_explore_adf --epsilon 0.1"}, "vw_args"),
        ({"reward": {"min": 5, "max": 1}}, "reward"),
        ({"split": {"train_ratio": 0}}, "split.train_ratio"),
        ({"promotion": {"unknown": 1}}, "promotion.unknown"),
    ],
)
def test_an_invalid_change_names_the_key_and_writes_nothing(
    catalog: ExperimentCatalog, changes: dict[str, object], key: str
) -> None:
    catalog.create("home", {}, by="ann")
    with pytest.raises(InvalidExperiment) as caught:
        catalog.update("home", changes, by="ann", why="try")
    assert caught.value.errors[0][0] == key
    assert str(caught.value).startswith(key)
    assert [r.version for r in catalog.history("home")] == [1]


def test_names_must_be_new_known_and_safe(catalog: ExperimentCatalog) -> None:
    catalog.create("home", {}, by="ann")
    with pytest.raises(ExperimentExists):
        catalog.create("home", {}, by="ann")
    with pytest.raises(ExperimentNotFound):
        catalog.update("nope", {}, by="ann", why="x")
    with pytest.raises(ExperimentNotFound):
        catalog.history("nope")
    with pytest.raises(InvalidExperiment, match="name"):
        catalog.create("../etc", {}, by="ann")
    with pytest.raises(InvalidExperiment, match="why"):
        catalog.update("home", {"split": {"train_ratio": 0.5}}, by="ann", why=" ")
    assert [r.version for r in catalog.history("home")] == [1]


def test_archive_hides_refuses_updates_and_create_brings_back(catalog: ExperimentCatalog) -> None:
    catalog.create("home", {}, by="ann")
    catalog.create("shop", {}, by="ann")
    archived = catalog.archive("home", by="ann", why="ended")
    assert archived.archived and archived.version == 2
    assert [r.name for r in catalog.list()] == ["shop"]
    assert [r.name for r in catalog.list(include_archived=True)] == ["home", "shop"]
    assert list(catalog.active()) == ["shop"]
    with pytest.raises(ExperimentConflict, match="archived"):
        catalog.update("home", {"split": {"train_ratio": 0.5}}, by="ann", why="x")
    back = catalog.create("home", {"split": {"train_ratio": 0.5}}, by="ann", why="again")
    assert (back.version, back.archived) == (3, False)
    assert catalog.heads() == {"home": 3, "shop": 1}


def test_changing_vw_arguments_points_the_experiment_at_a_fresh_model(
    catalog: ExperimentCatalog, store: ObjectStore
) -> None:
    registry = ModelRegistry(store)
    catalog.create("home", {}, by="ann")
    first = registry.current("home")
    assert first is not None  # created with its first model

    catalog.update("home", {"reward": {"wait_seconds": 5}}, by="ann", why="no model change")
    pointer = registry.current("home")
    assert pointer is not None and pointer.model_id == first.model_id

    changed = catalog.update(
        "home", {"exploration": {"type": "egreedy", "epsilon": 0.1}}, by="ann", why="explore"
    )
    assert changed.fresh_model_reason is not None and "--epsilon 0.1" in changed.fresh_model_reason
    pointer = registry.current("home")
    assert pointer is not None and pointer.model_id == changed.fresh_model_id
    assert pointer.previous == first.model_id and changed.fresh_model_reason in pointer.reason
    fresh = registry.metadata("home", pointer.model_id)
    assert fresh.vw_args == changed.experiment().vw_arguments()
    assert fresh.parent_id is None and fresh.events_trained == 0
    assert changed.fresh_model_reason in fresh.history[0]["note"]
