"""`cbloop train`: warm starts, incremental retraining on joins, parents and the mirror."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import Result
from conftest import LogAndJoin
from learning_world import UNIFORM_VALUE, true_value

from cbloop.registry import ModelMetadata, ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.learning import train_command
from cbloop_pipeline.models import ModelChoiceError
from cbloop_pipeline.ope.logged import read_logged_events
from cbloop_pipeline.ope.scoring import score_file
from cbloop_pipeline.tables import fit_encoder, load_table, logged_uniform_events
from cbloop_pipeline.warehouse import connect

CLASSES = ("A", "B", "C")


def _labelled_rows(n: int, seed: int) -> list[tuple[float, str, str]]:
    """x in [0,1) picks the class by thirds; the color is noise."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        x = rng.random()
        color = rng.choice(("red", "blue"))
        rows.append((round(x, 4), color, CLASSES[min(int(x * 3), 2)]))
    return rows


def _write_csv(path: Path, rows: list[tuple[float, str, str]]) -> Path:
    lines = ["x,color,label"] + [f"{x},{c},{label}" for x, c, label in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(open_store(settings.storage))


def _model_path(settings: Settings, meta: ModelMetadata, tmp: Path) -> Path:
    return _registry(settings).fetch(meta.experiment, meta.model_id, tmp)


def _policy_value_on_events(
    settings: Settings, meta: ModelMetadata, data: Path, segments: dict[str, int], tmp: Path
) -> float:
    """True value of the model's policy on the contexts of a joined file of the world."""
    logged = read_logged_events(data)
    scores = score_file(
        data,
        _model_path(settings, meta, tmp),
        settings.experiment("default").vw_arguments(),
        logged=logged,
    )
    pmfs = [scores.event_pmf(i) for i in range(logged.n)]
    return true_value(pmfs, [segments[str(e)] for e in logged.event_id])


def test_warm_start_from_a_labelled_table_beats_the_uniform_policy(
    lsettings: Settings, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    train_csv = _write_csv(tmp_path / "train.csv", _labelled_rows(900, seed=1))
    result = cli(
        "train", "--warm-start", str(train_csv), "--label-column", "label",
        "--events", "1800", "--seed", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [meta] = _registry(lsettings).list_models("default")
    assert meta.events_trained == 1800
    assert meta.joins == []
    source = (meta.model_extra or {})["training"]["sources"][0]
    assert source["format"] == "table" and source["classes"] == list(CLASSES)

    # Held-out rows of the same world, encoded with the encoder the warm start fitted.
    train_table = load_table(train_csv, "label")
    test_table = load_table(_write_csv(tmp_path / "test.csv", _labelled_rows(600, 2)), "label")
    lines = logged_uniform_events(test_table, 600, 9, encoder=fit_encoder(train_table))
    data = tmp_path / "test.dsjson"
    data.write_text("\n".join(lines) + "\n")
    logged = read_logged_events(data)
    scores = score_file(data, _model_path(lsettings, meta, tmp_path), meta.vw_args, logged=logged)
    # _multi lists the classes in CLASSES order; the row's class follows from its context.
    classes = [_class_of(line) for line in lines]
    value = float(np.mean([scores.event_pmf(i)[k] for i, k in enumerate(classes)]))
    assert value > 0.8 > 1 / len(CLASSES) + 0.3, value


def _class_of(line: str) -> int:
    return min(int(orjson.loads(line)["c"]["x"]["x"] * 3), 2)


def test_retraining_on_new_joins_improves_the_policy_and_learns_each_join_once(
    lsettings: Settings, log_and_join: LogAndJoin, tmp_path: Path
) -> None:
    first, job1 = log_and_join(300, seed=1)
    model1 = train_command(lsettings, "default").model
    assert model1 is not None and model1.joins == [job1.join_id]
    assert model1.events_trained == job1.train_events

    second, job2 = log_and_join(4000, seed=2)
    model2 = train_command(lsettings, "default").model
    assert model2 is not None
    assert model2.parent_id == model1.model_id
    assert model2.joins == [job2.join_id]  # job1 was learned by the parent
    assert model2.events_trained == job2.train_events
    assert (model2.model_extra or {})["events_total"] == job1.train_events + job2.train_events

    # Nothing new: no model.
    assert train_command(lsettings, "default").model is None

    segments = dict(
        zip(first.event_ids + second.event_ids, first.segments + second.segments, strict=True)
    )
    holdout = lsettings.storage.root / job2.eval_key
    v1 = _policy_value_on_events(lsettings, model1, holdout, segments, tmp_path)
    v2 = _policy_value_on_events(lsettings, model2, holdout, segments, tmp_path)
    assert UNIFORM_VALUE + 0.05 < v1 < v2
    assert v2 > 0.7


def test_fresh_training_learns_every_join_and_mirrors_into_the_warehouse(
    lsettings: Settings, log_and_join: LogAndJoin
) -> None:
    _, job1 = log_and_join(200, seed=1)
    _, job2 = log_and_join(200, seed=2)
    parent = train_command(lsettings, "default").model
    fresh = train_command(lsettings, "default", fresh=True).model
    assert parent is not None and fresh is not None
    assert fresh.parent_id is None
    assert fresh.joins == [job1.join_id, job2.join_id]
    assert fresh.progressive_loss is not None and -1.0 <= fresh.progressive_loss <= 0.0

    con = connect(lsettings.warehouse)
    try:
        rows = con.execute(
            "SELECT model_id, parent_id, state, joins, events_trained, progressive_loss "
            "FROM models ORDER BY created_at"
        ).fetchall()
    finally:
        con.close()
    assert [r[0] for r in rows] == [parent.model_id, fresh.model_id]
    assert rows[1][1] is None and rows[1][2] == "trained"
    assert rows[1][3] == [job1.join_id, job2.join_id]
    assert rows[1][4] == job1.train_events + job2.train_events
    assert rows[1][5] == pytest.approx(fresh.progressive_loss)


def test_a_parent_trained_with_other_vw_arguments_is_refused(
    make_settings: object, lsettings: Settings, log_and_join: LogAndJoin
) -> None:
    log_and_join(200, seed=1)
    old = train_command(lsettings, "default").model
    assert old is not None
    changed = make_settings(  # type: ignore[operator]
        experiments={
            "default": {"vw_args": "--interactions :: -b 16", "reward": {"wait_seconds": 60}}
        }
    )
    with pytest.raises(ModelChoiceError, match="VW arguments"):
        train_command(changed, "default", parent=old.model_id)
    # Without --parent the mismatched model is simply not a candidate parent.
    new = train_command(changed, "default").model
    assert new is not None and new.parent_id is None


def test_warm_start_from_dsjson_history_feeds_the_file_to_vw(
    lsettings: Settings, log_and_join: LogAndJoin, tmp_path: Path
) -> None:
    _, job = log_and_join(500, seed=4)
    exported = tmp_path / "history.dsjson"
    exported.write_bytes((lsettings.storage.root / job.train_key).read_bytes())
    meta = train_command(lsettings, "default", fresh=True, warm_start=exported).model
    assert meta is not None
    assert meta.events_trained == job.train_events
    assert meta.joins == []  # a warm start consumes no join
    # The joins are still unlearned by this lineage, so the next train learns them.
    after = train_command(lsettings, "default").model
    assert after is not None and after.joins == [job.join_id]
    assert np.isfinite(after.progressive_loss or 0.0)
