"""The learning commands as functions of Settings: what `cbloop train|evaluate|deploy|rollback`
run (and what the benchmark times). Each opens the registry and the warehouse, does its job
through the step modules, and leaves the warehouse mirror in line with the registry.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from cbloop.registry import ModelRegistry, RegistryError
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.deploy import Decision, DeployError, deploy, latest_candidate, rollback
from cbloop_pipeline.evaluate import EvaluateError, EvaluateOptions, evaluate_candidate
from cbloop_pipeline.join_catalog import finished_joins
from cbloop_pipeline.mirror import sync_experiment
from cbloop_pipeline.models import deployed_model
from cbloop_pipeline.train import (
    TrainOutcome,
    choose_parent,
    train_joins,
    train_model,
    unseen_joins,
)
from cbloop_pipeline.warehouse import connect
from cbloop_pipeline.warm_start import WarmStartOptions, warm_start_source

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Context:
    """What a learning command works with."""

    settings: Settings
    registry: ModelRegistry
    con: duckdb.DuckDBPyConnection


@contextmanager
def open_context(settings: Settings) -> Iterator[Context]:
    """Registry + warehouse for one command; the connection is closed on the way out."""
    registry = ModelRegistry(open_store(settings.storage))
    con = connect(settings.warehouse)
    try:
        yield Context(settings, registry, con)
    finally:
        con.close()


def train_command(
    settings: Settings,
    name: str,
    *,
    parent: str | None = None,
    fresh: bool = False,
    warm_start: Path | None = None,
    warm_start_options: WarmStartOptions | None = None,
    work_dir: Path | None = None,
) -> TrainOutcome:
    """`cbloop train`: joins the parent's lineage has not learned, or a warm-start file."""
    experiment = settings.experiment(name)
    with open_context(settings) as ctx:
        base = choose_parent(ctx.registry, name, experiment, parent=parent, fresh=fresh)
        if warm_start is not None:
            with tempfile.TemporaryDirectory(prefix="cbloop-warm-", dir=work_dir) as tmp:
                source = warm_start_source(
                    warm_start, name, warm_start_options or WarmStartOptions(), Path(tmp)
                )
                outcome = train_model(
                    ctx.registry,
                    name,
                    experiment,
                    [source],
                    parent=base,
                    work_dir=work_dir,
                    note=f"warm start from {warm_start}",
                )
        else:
            exports = [j.train_export() for j in finished_joins(ctx.con, name)]
            pending = unseen_joins(ctx.registry, base, exports, name=name)
            outcome = train_joins(
                ctx.registry, name, experiment, pending, parent=base, work_dir=work_dir
            )
        sync_experiment(ctx.con, ctx.registry, name)
    return outcome


def evaluate_command(
    settings: Settings,
    name: str,
    *,
    model_id: str | None = None,
    joins: Sequence[str] = (),
    options: EvaluateOptions | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """`cbloop evaluate`: the model (default: newest candidate) and the deployed one on the
    eval splits of the given joins (default: every join)."""
    experiment = settings.experiment(name)
    with open_context(settings) as ctx:
        if model_id is not None:
            try:
                candidate = ctx.registry.metadata(name, model_id)
            except RegistryError as exc:
                raise EvaluateError(str(exc)) from exc
        else:
            found = latest_candidate(ctx.registry, name, experiment)
            if found is None:
                raise EvaluateError(f"experiment {name!r} has no trained model to evaluate")
            candidate = found
        available = finished_joins(ctx.con, name)
        if joins:
            known = {j.join_id: j for j in available}
            missing = [j for j in joins if j not in known]
            if missing:
                raise EvaluateError(f"no join {', '.join(missing)} in experiment {name!r}")
            chosen = [known[j] for j in joins]
        else:
            chosen = available
        splits = [j.eval_split() for j in chosen if j.eval_events > 0]
        if not splits:
            raise EvaluateError(f"experiment {name!r} has no eval events in the chosen joins")
        record = evaluate_candidate(
            ctx.registry,
            name,
            experiment,
            candidate,
            splits,
            deployed=deployed_model(ctx.registry, name),
            options=options,
            work_dir=work_dir,
        )
        sync_experiment(ctx.con, ctx.registry, name)
    return record


def deploy_command(
    settings: Settings, name: str, *, model_id: str | None = None, force: bool = False
) -> Decision:
    with open_context(settings) as ctx:
        try:
            return deploy(
                ctx.registry, name, settings.experiment(name), model_id=model_id, force=force
            )
        finally:
            # Refusals and decisions are worth mirroring even when deploy raised.
            sync_experiment(ctx.con, ctx.registry, name)


def rollback_command(settings: Settings, name: str, *, to: str | None = None) -> Decision:
    with open_context(settings) as ctx:
        try:
            return rollback(ctx.registry, name, settings.experiment(name), to=to)
        finally:
            sync_experiment(ctx.con, ctx.registry, name)


__all__ = [
    "Context",
    "DeployError",
    "EvaluateError",
    "deploy_command",
    "evaluate_command",
    "open_context",
    "rollback_command",
    "train_command",
]
