"""`cbloop train`: a new model from a parent, learning joined data it has not seen.

VW learns the joined DSJSON through its own parser on its own thread (`-d file`): there is no
Python loop over examples, so training runs at VW's native speed. Warm starts either feed
DSJSON history as is, or turn a labelled table into the events a uniformly random policy would
have logged (cbloop_pipeline.tables) and feed those.

A model is registered (file, then metadata) only after VW has finished writing it, and the
joins it learned are recorded only in that metadata, so a run killed at any point leaves the
joins unlearned and the next run picks them up.
"""

from __future__ import annotations

import logging
import math
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbloop.clock import format_ts
from cbloop.errors import InvalidInput
from cbloop.registry import MODEL_FILE, ModelMetadata, ModelRegistry, RegistryError
from cbloop.settings import ExperimentSettings
from cbloop.storage import ObjectStore
from cbloop_pipeline.learner import LearnerFailed, run_learner
from cbloop_pipeline.localfiles import MissingData, local_file, single_file
from cbloop_pipeline.models import (
    ModelChoiceError,
    events_total,
    joins_seen,
    latest_trainable,
    why_not_deployable,
)

logger = logging.getLogger(__name__)


class TrainError(InvalidInput):
    """Training could not run (bad arguments, unreadable data, unusable parent)."""


@dataclass(frozen=True)
class LearnStats:
    """What VW reports after one pass over a file."""

    examples: float
    sum_loss: float
    seconds: float
    #: NaN or infinite weights in the written model.
    bad_weights: int = 0

    @property
    def not_finite(self) -> str | None:
        """Why the model must not be used (its loss or weights are not finite), or None."""
        if not math.isfinite(self.sum_loss):
            return f"training loss is {self.sum_loss} (a reward too large for VW's 32-bit floats?)"
        if self.bad_weights:
            return f"{self.bad_weights} model weights are NaN or infinite"
        return None

    @property
    def progressive_loss(self) -> float | None:
        """VW's progressive validation loss: each example's loss before learning from it."""
        return self.sum_loss / self.examples if self.examples else None

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class JoinExport:
    """A finished join's train split, as training needs it."""

    join_id: str
    train_key: str
    train_events: int | None = None


@dataclass(frozen=True)
class TrainSource:
    """One file of training data and where it came from (for the metadata)."""

    kind: str  # "join" | "warm_start"
    name: str
    path: Path
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainOutcome:
    """The registered model, or None when there was nothing new to learn."""

    model: ModelMetadata | None
    stats: LearnStats | None
    reason: str
    #: A model VW produced but that was registered as refused (not finite); never a parent.
    refused: ModelMetadata | None = None


def vw_learn_args(vw_args: str, data: Path, out: Path, init: Path | None) -> list[str]:
    """The VW command line of one training pass (shared with the benchmark's bare-VW run).

    `--save_resume` keeps the adaptive learning-rate state in the file, so a model that is
    continued later learns as if it had seen all the data in one run.
    """
    args = [*shlex.split(vw_args), "--dsjson", "--quiet", "--save_resume"]
    args += ["-d", str(data), "-f", str(out)]
    if init is not None:
        args += ["-i", str(init)]
    return args


def learn(vw_args: str, data: Path, out: Path, init: Path | None = None) -> LearnStats:
    """One VW pass over `data` (joined DSJSON) from `init` (or nothing); the model goes to `out`.

    VW runs in a child process (cbloop_pipeline.learner): a VW crash is a TrainError here,
    not the end of the calling process. The argument list is passed as a list because pyvw
    splits a string on every space.
    """
    try:
        report = run_learner(vw_learn_args(vw_args, data, out, init), out)
    except LearnerFailed as exc:
        raise TrainError(f"VW could not learn {data}: {exc}") from exc
    return LearnStats(
        examples=report.examples,
        sum_loss=report.sum_loss,
        seconds=report.seconds,
        bad_weights=report.bad_weights,
    )


def choose_parent(
    registry: ModelRegistry,
    name: str,
    experiment: ExperimentSettings,
    *,
    parent: str | None,
    fresh: bool,
) -> ModelMetadata | None:
    """--parent M, a fresh model (--fresh, or no usable model yet), or the newest usable one."""
    if fresh:
        if parent is not None:
            raise ModelChoiceError("--parent and --fresh exclude each other")
        return None
    if parent is None:
        return latest_trainable(registry, name, experiment)
    try:
        meta = registry.metadata(name, parent)
    except RegistryError as exc:
        raise ModelChoiceError(str(exc)) from exc
    reason = why_not_deployable(meta, experiment)
    if reason is not None:
        raise ModelChoiceError(
            f"{reason}; it cannot be a parent", hint="continue from another model or start --fresh"
        )
    return meta


def unseen_joins(
    registry: ModelRegistry,
    parent: ModelMetadata | None,
    joins: Sequence[JoinExport],
    *,
    name: str | None = None,
) -> list[JoinExport]:
    """Joins `parent`'s lineage has not learned, except those set aside by a refusal in
    experiment `name` (default: the parent's)."""
    seen = joins_seen(registry, parent)
    experiment = name if name is not None else parent.experiment if parent is not None else None
    if experiment is not None:
        seen |= refused_joins(registry, experiment)
    return [j for j in joins if j.join_id not in seen]


def join_sources(store: ObjectStore, joins: Sequence[JoinExport], work: Path) -> list[TrainSource]:
    """Local files of the joins' train splits (copied only when the store is not local)."""
    sources = []
    for join in joins:
        try:
            local = local_file(store, join.train_key, work)
        except MissingData as exc:
            raise TrainError(f"train split of join {join.join_id}: {exc}") from exc
        details = {"events": join.train_events} if join.train_events is not None else {}
        sources.append(TrainSource("join", join.join_id, local, details))
    return sources


def train_model(
    registry: ModelRegistry,
    name: str,
    experiment: ExperimentSettings,
    sources: Sequence[TrainSource],
    *,
    parent: ModelMetadata | None,
    work_dir: Path | None = None,
    note: str = "",
) -> TrainOutcome:
    """Learn `sources` (in order) on top of `parent` and register the result as "trained"."""
    nonempty = [s for s in sources if s.path.stat().st_size > 0]
    if not nonempty:
        return TrainOutcome(None, None, "no new training events")
    vw_args = experiment.vw_arguments()
    with tempfile.TemporaryDirectory(prefix="cbloop-train-", dir=work_dir) as tmp_name:
        tmp = Path(tmp_name)
        init = registry.fetch(name, parent.model_id, tmp) if parent is not None else None
        data = single_file([s.path for s in nonempty], tmp / "train-input.dsjson")
        out = tmp / MODEL_FILE
        logger.info(
            "training %s on %d source(s) from %s",
            name,
            len(nonempty),
            parent.model_id if parent else "a fresh model",
        )
        stats = learn(vw_args, data, out, init)
        _check_count(sources, stats)
        if stats.examples == 0:
            return TrainOutcome(None, stats, "no labelled examples in the new data")
        meta = _metadata(
            registry,
            name=name,
            vw_args=vw_args,
            parent=parent,
            sources=sources,
            stats=stats,
            note=note,
        )
        refusal = stats.not_finite
        if refusal is not None:
            return _refuse(registry, out, meta, refusal, stats)
        registry.save(out, meta)
    logger.info(
        "registered model %s: %.0f examples in %.2fs (%.0f ex/s), progressive loss %s",
        meta.model_id,
        stats.examples,
        stats.seconds,
        stats.examples_per_second,
        f"{stats.progressive_loss:.5f}" if stats.progressive_loss is not None else "n/a",
    )
    return TrainOutcome(meta, stats, "trained")


def _refuse(
    registry: ModelRegistry, out: Path, meta: ModelMetadata, reason: str, stats: LearnStats
) -> TrainOutcome:
    """Register the model as refused, with its reason: kept for inspection, never a parent or
    a candidate. Its joins are set aside (`refused_joins`) so that the next training, from the
    last good model, does not learn the same poison again."""
    meta.state = "refused"
    meta.progressive_loss = None  # NaN is not JSON; the reason says what it was
    extra = meta.model_extra if meta.model_extra is not None else {}
    extra["refused_reason"] = reason
    training = extra.get("training")
    if isinstance(training, dict) and not math.isfinite(float(training.get("sum_loss", 0.0))):
        training["sum_loss"] = str(training["sum_loss"])
    meta.record("refused", by="train", reason=reason, joins=list(meta.joins))
    registry.save(out, meta)
    logger.error(
        "refused model %s: %s; joins set aside: %s",
        meta.model_id,
        reason,
        ", ".join(meta.joins) or "-",
    )
    return TrainOutcome(None, stats, f"model {meta.model_id} refused: {reason}", refused=meta)


def refused_joins(registry: ModelRegistry, name: str) -> set[str]:
    """Joins whose training produced a refused (not finite) model: set aside for good."""
    return {
        join
        for m in registry.list_models(name)
        if m.state == "refused" and (m.model_extra or {}).get("refused_reason")
        for join in m.joins
    }


def _check_count(sources: Sequence[TrainSource], stats: LearnStats) -> None:
    """VW skips lines it cannot parse without failing; a count that differs from what the
    joins exported is the only sign of it."""
    counts = [s.details.get("events") for s in sources]
    if counts and all(isinstance(c, int) for c in counts):
        expected = sum(c for c in counts if isinstance(c, int))
        if expected != int(stats.examples):
            logger.warning(
                "VW learned %d examples but the sources hold %d events; unparsable lines?",
                int(stats.examples),
                expected,
            )


def _metadata(
    registry: ModelRegistry,
    *,
    name: str,
    vw_args: str,
    parent: ModelMetadata | None,
    sources: Sequence[TrainSource],
    stats: LearnStats,
    note: str,
) -> ModelMetadata:
    events = int(stats.examples)
    meta = ModelMetadata.model_validate(
        {
            "model_id": registry.new_model_id(),
            "experiment": name,
            "vw_args": vw_args,
            "created_at": format_ts(),
            "parent_id": parent.model_id if parent else None,
            "state": "trained",
            # Joins with an empty train split are listed too: they are consumed, not pending.
            "joins": [s.name for s in sources if s.kind == "join"],
            "events_trained": events,
            "progressive_loss": stats.progressive_loss,
            "events_total": events_total(parent) + events,
            "training": {
                "sources": [{"kind": s.kind, "name": s.name, **s.details} for s in sources],
                "examples": stats.examples,
                "sum_loss": stats.sum_loss,
                "seconds": round(stats.seconds, 4),
                "examples_per_second": round(stats.examples_per_second, 1),
            },
        }
    )
    meta.record("trained", note=note or "trained", parent=meta.parent_id, events=events)
    return meta


def train_joins(
    registry: ModelRegistry,
    name: str,
    experiment: ExperimentSettings,
    joins: Sequence[JoinExport],
    *,
    parent: ModelMetadata | None,
    work_dir: Path | None = None,
    note: str = "",
) -> TrainOutcome:
    """Learn the train splits of `joins`, in order, on top of `parent`."""
    if not joins:
        return TrainOutcome(None, None, "no new joins")
    with tempfile.TemporaryDirectory(prefix="cbloop-joins-", dir=work_dir) as tmp:
        sources = join_sources(registry.store, joins, Path(tmp))
        return train_model(
            registry, name, experiment, sources, parent=parent, work_dir=work_dir, note=note
        )
