"""The pipeline side of a simulation, through the functions the CLI commands run.

`prepare` is `cbloop migrate`, `warm_start` is `cbloop train --warm-start FILE` followed by a
forced `cbloop deploy` (a warm-started model has no eval data to be judged on), and `cycle`
is `cbloop loop --once`. Running them in this process rather than as subprocesses saves the
interpreter and VW start-up of every command; the warehouse is still written by the pipeline
code alone, and the service learns about new models only through the registry pointer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cbloop.errors import CbloopError
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.deploy import DeployError
from cbloop_pipeline.learning import deploy_command, train_command
from cbloop_pipeline.lock import exclusive_lock
from cbloop_pipeline.loop import run_cycle
from cbloop_pipeline.models import ModelChoiceError
from cbloop_pipeline.train import TrainError
from cbloop_pipeline.warehouse import WarehouseError, connect

logger = logging.getLogger(__name__)


class PipelineError(CbloopError):
    """A pipeline step of the simulation failed; the message names it."""


@dataclass(frozen=True)
class CycleReport:
    """What one cycle did, and which model the pointer names after it."""

    deployed_model_id: str | None
    details: dict[str, Any] = field(default_factory=dict)


class InProcessPipeline:
    def __init__(self, settings: Settings, experiment: str, *, work_dir: Path | None) -> None:
        self.settings = settings
        self.experiment = experiment
        self.work_dir = work_dir
        self.registry = ModelRegistry(open_store(settings.storage))

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the learning loop's lock: no `cbloop loop` may interleave with our cycles."""
        with exclusive_lock(self.settings.pipeline.lock_path):
            yield

    def prepare(self) -> None:
        try:
            con = connect(self.settings.warehouse)  # migrates on connect
        except WarehouseError as exc:
            raise PipelineError(f"warehouse: {exc}") from exc
        con.close()

    def current(self) -> str | None:
        pointer = self.registry.current(self.experiment)
        return pointer.model_id if pointer is not None else None

    def ensure_model(self) -> str:
        """The deployed model, creating the experiment's first one if there is none."""
        experiment = self.settings.experiment(self.experiment)
        return self.registry.ensure_initial_model(self.experiment, experiment).model_id

    def warm_start(self, path: Path) -> str:
        """Train a fresh model on the DSJSON history in `path` and deploy it; its id."""
        try:
            outcome = train_command(
                self.settings, self.experiment, fresh=True, warm_start=path, work_dir=self.work_dir
            )
            if outcome.model is None:
                raise PipelineError(f"warm start trained no model: {outcome.reason}")
            decision = deploy_command(
                self.settings, self.experiment, model_id=outcome.model.model_id, force=True
            )
        except (TrainError, DeployError, ModelChoiceError) as exc:
            raise PipelineError(f"warm start: {exc}") from exc
        if not decision.promoted:
            raise PipelineError(f"warm-started model was not deployed: {decision.reason}")
        return outcome.model.model_id

    def cycle(self) -> CycleReport:
        """One `cbloop loop --once` cycle: ingest, join, train, evaluate, deploy."""
        started = time.perf_counter()
        report = run_cycle(self.settings, self.experiment, work_dir=self.work_dir)
        details: dict[str, Any] = {
            "cycle": report.cycle,
            "seconds": round(time.perf_counter() - started, 3),
            "steps": {s.step: f"{s.status}: {s.detail}" for s in report.steps},
        }
        return CycleReport(self.current(), details)
