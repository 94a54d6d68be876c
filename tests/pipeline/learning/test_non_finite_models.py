"""A model whose loss or weights are not finite is refused at registration, never a parent:
one poisoned export does not freeze learning."""

from __future__ import annotations

import math
from collections.abc import Callable

from click.testing import Result
from conftest import LogAndJoin

from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.models import latest_trainable


def _poison(settings: Settings, train_key: str) -> None:
    """One huge cost in the join's train split, as a reward of 1e308 once made it there
    (written straight into the export: ingest now quarantines such a reward)."""
    path = settings.storage.root / train_key
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines and lines[0].startswith('{"_label_cost":')
    head, rest = lines[0].split(",", 1)
    lines[0] = '{"_label_cost":-1e308,' + rest
    assert head != lines[0]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_poisoned_export_gives_a_refused_model_and_the_next_cycle_trains_from_the_last_good(
    lsettings: Settings, log_and_join: LogAndJoin, cli: Callable[..., Result]
) -> None:
    registry = ModelRegistry(open_store(lsettings.storage))
    experiment = lsettings.experiment("default")
    registry.ensure_initial_model("default", experiment)
    log_and_join(600, seed=1)
    first = cli("loop", "--once")
    assert first.exit_code == 0, first.output
    good = latest_trainable(registry, "default", experiment)
    assert good is not None and good.joins and good.progressive_loss is not None

    _, poisoned = log_and_join(600, seed=2)
    _poison(lsettings, poisoned.train_key)
    second = cli("loop", "--once")
    assert second.exit_code == 0, second.output
    assert "refused" in second.output

    refused = [m for m in registry.list_models("default") if m.state == "refused"]
    assert len(refused) == 1
    reason = (refused[0].model_extra or {}).get("refused_reason", "")
    assert "not finite" in reason or "nan" in reason.lower() or "inf" in reason.lower(), reason
    # (The cycle's own join, empty here, was consumed along with the poisoned one.)
    assert poisoned.join_id in refused[0].joins
    assert refused[0].parent_id == good.model_id
    # The refused model is no parent and no candidate: the last good one still is.
    assert latest_trainable(registry, "default", experiment).model_id == good.model_id  # type: ignore[union-attr]

    _, fresh = log_and_join(600, seed=3)
    third = cli("loop", "--once")
    assert third.exit_code == 0, third.output
    newest = latest_trainable(registry, "default", experiment)
    assert newest is not None and newest.model_id not in (good.model_id, refused[0].model_id)
    assert newest.parent_id == good.model_id
    assert fresh.join_id in newest.joins
    assert poisoned.join_id not in newest.joins  # set aside, not relearned
    assert newest.progressive_loss is not None and math.isfinite(newest.progressive_loss)


def test_cbloop_train_says_why_it_refused_the_model(
    lsettings: Settings, log_and_join: LogAndJoin, cli: Callable[..., Result]
) -> None:
    _, job = log_and_join(300, seed=4)
    _poison(lsettings, job.train_key)
    result = cli("train")
    assert result.exit_code == 1
    assert "refused" in result.output and job.join_id in result.output
    registry = ModelRegistry(open_store(lsettings.storage))
    assert latest_trainable(registry, "default", lsettings.experiment("default")) is None
