"""`cbloop loop`: ingest, join, train, evaluate, deploy, again and again.

Every step decides what to do from durable state, not from what the previous step returned:
train learns the joins its parent's lineage has not learned (recorded in model metadata),
evaluate takes the newest trained model that has no evaluation against the deployed one,
deploy takes a candidate whose latest evaluation has no decision yet. So a cycle killed at any
point and started again does the remaining work once: no join is skipped or learned twice,
no model is evaluated twice against the same deployed model, and a model becomes deployable
only after its file and metadata are completely written (pipeline.train).

The step being run is recorded in the warehouse (pipeline.loop_state); a loop that finds its
experiment's cycle still "running" resumes that cycle at the recorded step. An exclusive lock
(pipeline.lock) keeps a second loop out. The warehouse connection is held only while a cycle
runs, so other pipeline commands can use the warehouse between cycles.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import duckdb

from cbloop.clock import utcnow_naive
from cbloop.errors import CbloopError, TransientError
from cbloop.registry import ModelMetadata, ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline import loop_state
from cbloop_pipeline.dashboard.snapshot import publish_quietly
from cbloop_pipeline.deploy import deploy, latest_candidate
from cbloop_pipeline.evaluate import evaluate_candidate
from cbloop_pipeline.graduation import ModeSwitch, graduation_step
from cbloop_pipeline.ingest import ingest
from cbloop_pipeline.join import run_join
from cbloop_pipeline.join_catalog import finished_joins
from cbloop_pipeline.loop_resilience import Backoff, Outage, corruption_cause, is_fatal
from cbloop_pipeline.mirror import sync_experiment, sync_models
from cbloop_pipeline.models import deployed_model, latest_trainable, reconcile_states
from cbloop_pipeline.train import train_joins, unseen_joins
from cbloop_pipeline.warehouse import WarehouseCorrupt, connect

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class LoopStepError(CbloopError):
    """A step of the cycle failed; the cycle stopped there and will start afresh next time."""

    def __init__(self, experiment: str, step: str, cause: BaseException) -> None:
        super().__init__(f"{experiment}: step {step} failed: {cause}")
        self.experiment = experiment
        self.step = step


@dataclass(frozen=True)
class StepResult:
    status: str  # done | skipped
    detail: str
    results: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True)
class StepReport:
    step: str
    status: str
    detail: str


@dataclass
class CycleReport:
    experiment: str
    cycle: int
    resumed_at: str | None
    steps: list[StepReport] = field(default_factory=list)


@dataclass(frozen=True)
class _Context:
    settings: Settings
    name: str
    con: duckdb.DuckDBPyConnection
    registry: ModelRegistry
    work_dir: Path | None


# -- steps -------------------------------------------------------------------------------------


def _ingest(ctx: _Context) -> StepResult:
    result = ingest(ctx.con, ctx.registry.store)
    detail = (
        f"{result.segments} segments: {result.decision_lines} decisions, "
        f"{result.outcome_lines} outcomes, {result.rejected_lines} rejected"
    )
    return StepResult("done" if result.segments else "skipped", detail)


def _join(ctx: _Context) -> StepResult:
    job = run_join(ctx.con, ctx.registry.store, ctx.name, ctx.settings.experiment(ctx.name))
    return StepResult(
        "done" if job.joined else "skipped",
        f"join {job.join_id}: {job.train_events} train, {job.eval_events} eval events",
        {"last_join_id": job.join_id},
    )


def _train(ctx: _Context) -> StepResult:
    experiment = ctx.settings.experiment(ctx.name)
    parent = latest_trainable(ctx.registry, ctx.name, experiment)
    exports = [j.train_export() for j in finished_joins(ctx.con, ctx.name)]
    pending = unseen_joins(ctx.registry, parent, exports, name=ctx.name)
    if not pending:
        return StepResult("skipped", "no join the newest model has not learned")
    outcome = train_joins(
        ctx.registry,
        ctx.name,
        experiment,
        pending,
        parent=parent,
        work_dir=ctx.work_dir,
        note="loop",
    )
    if outcome.refused is not None:
        # Recorded, not raised: the model is in the registry as refused with its reason, its
        # joins are set aside, and the next cycle trains from the last good model.
        sync_models(ctx.con, [outcome.refused])
        return StepResult("refused", outcome.reason)
    if outcome.model is None:
        return StepResult("skipped", outcome.reason)
    sync_models(ctx.con, [outcome.model])
    return StepResult(
        "done",
        f"model {outcome.model.model_id} learned {outcome.model.events_trained} events "
        f"of {len(pending)} join(s)",
        {"last_trained_model_id": outcome.model.model_id},
    )


def _undecided_candidate(ctx: _Context) -> ModelMetadata | None:
    return latest_candidate(ctx.registry, ctx.name, ctx.settings.experiment(ctx.name))


def _evaluate(ctx: _Context) -> StepResult:
    candidate = _undecided_candidate(ctx)
    if candidate is None:
        return StepResult("skipped", "no trained candidate")
    current = deployed_model(ctx.registry, ctx.name)
    current_id = current.model_id if current else None
    if any(e.get("deployed_model_id") == current_id for e in candidate.evaluations):
        return StepResult("skipped", f"{candidate.model_id} already evaluated against {current_id}")
    splits = [j.eval_split() for j in finished_joins(ctx.con, ctx.name) if j.eval_events > 0]
    recent = ctx.settings.experiment(ctx.name).evaluation.recent_joins
    if recent is not None:
        splits = splits[-recent:]
    if not splits:
        return StepResult("skipped", "no eval events yet")
    record = evaluate_candidate(
        ctx.registry,
        ctx.name,
        ctx.settings.experiment(ctx.name),
        candidate,
        splits,
        deployed=current,
        work_dir=ctx.work_dir,
    )
    sync_models(ctx.con, [candidate])
    return StepResult(
        "done",
        f"{candidate.model_id} on {record['n_events']} events ({record['eval_id']})",
        {"last_evaluated_model_id": candidate.model_id, "last_eval_id": record["eval_id"]},
    )


def _deploy(ctx: _Context) -> StepResult:
    candidate = _undecided_candidate(ctx)
    if candidate is None or not candidate.evaluations:
        return StepResult("skipped", "no evaluated candidate")
    eval_id = candidate.evaluations[-1]["eval_id"]
    decided = [h for h in candidate.history if h.get("what") == "promotion"]
    if any(h.get("eval_id") == eval_id for h in decided):
        return StepResult("skipped", f"{candidate.model_id}: evaluation {eval_id} already decided")
    decision = deploy(
        ctx.registry, ctx.name, ctx.settings.experiment(ctx.name), model_id=candidate.model_id
    )
    current = ctx.registry.current(ctx.name)
    current_id = current.model_id if current else None
    outcome = "promoted" if decision.promoted else f"not promoted ({current_id} stays)"
    return StepResult(
        "done",
        f"{candidate.model_id} {outcome}: {decision.reason}",
        {"deployed_model_id": current_id},
    )


def _graduate(ctx: _Context, cycle: int, switch: ModeSwitch | None) -> StepReport | None:
    """Apprentice experiments only: assess the newest evaluation and maybe go online.

    Run after the resumable steps (a rerun skips an evaluation already assessed) and recorded
    in loop_steps like a step; a failure stops the cycle like any step's.
    """
    experiment = ctx.settings.experiment(ctx.name)
    if experiment.mode != "apprentice":
        return None
    started = utcnow_naive()
    try:
        status, detail = graduation_step(
            ctx.con,
            ctx.registry,
            ctx.name,
            experiment,
            switch,
            work_dir=ctx.work_dir,
        )
    except Exception as exc:
        loop_state.stage_failed(
            ctx.con, ctx.name, cycle, "graduate", detail=_describe(exc), started_at=started
        )
        raise LoopStepError(ctx.name, "graduate", exc) from exc
    ctx.con.execute(
        "INSERT INTO loop_steps VALUES (?, ?, 'graduate', ?, ?, ?, ?)",
        [ctx.name, cycle, status, started, utcnow_naive(), detail],
    )
    logger.info("%s cycle %d graduate: %s (%s)", ctx.name, cycle, status, detail)
    return StepReport("graduate", status, detail)


STEP_FUNCTIONS: dict[str, Callable[[_Context], StepResult]] = {
    "ingest": _ingest,
    "join": _join,
    "train": _train,
    "evaluate": _evaluate,
    "deploy": _deploy,
}


# -- cycle and loop ----------------------------------------------------------------------------


def run_cycle(
    settings: Settings,
    name: str,
    *,
    work_dir: Path | None = None,
    unrecorded: list[Outage] | None = None,
    mode_switch: ModeSwitch | None = None,
) -> CycleReport:
    """One full cycle for one experiment (or the rest of an interrupted one).

    `mode_switch` applies an apprentice's graduation to online where the experiment is
    defined (e.g. the catalog); it is recorded in the warehouse's `graduations` either way
    (see pipeline.graduation).

    `unrecorded`: failures that happened while the warehouse could not be written (it was
    busy); they are recorded in loop_steps as soon as it can be, then removed from the list.
    """
    settings.experiment(name)  # unknown experiment: fail before touching anything
    registry = ModelRegistry(open_store(settings.storage))
    con = connect(settings.warehouse)
    try:
        ctx = _Context(settings, name, con, registry, work_dir)
        if unrecorded:
            loop_state.record_outages(con, unrecorded)
            unrecorded.clear()
        state = loop_state.load(con, name)
        if state is not None and state.interrupted:
            cycle, first = state.cycle, loop_state.STEPS.index(state.step)
            report = CycleReport(name, cycle, resumed_at=state.step)
            logger.warning("resuming interrupted cycle %d of %s at %s", cycle, name, state.step)
        else:
            cycle, first = loop_state.start_cycle(con, name), 0
            report = CycleReport(name, cycle, resumed_at=None)
        _outside_step(ctx, cycle, "reconcile", lambda: reconcile_states(registry, name))
        for step in loop_state.STEPS[first:]:
            report.steps.append(_run_step(ctx, cycle, step))
        graduated = _graduate(ctx, cycle, mode_switch)
        if graduated is not None:
            report.steps.append(graduated)
        _outside_step(ctx, cycle, "sync", lambda: sync_experiment(con, registry, name))
        current = _outside_step(ctx, cycle, "sync", lambda: registry.current(name))
        loop_state.finish_cycle(con, name)
        if current is not None:
            con.execute(
                "UPDATE experiment_state SET deployed_model_id = ? WHERE experiment = ?",
                [current.model_id, name],
            )
        return report
    finally:
        con.close()


def _outside_step(ctx: _Context, cycle: int, stage: str, work: Callable[[], _T]) -> _T:
    """Work a cycle does between its steps (reading the registry, mirroring it), recorded
    like a step when it fails: the store may be briefly unreachable there too."""
    started = utcnow_naive()
    try:
        return work()
    except Exception as exc:
        loop_state.stage_failed(
            ctx.con, ctx.name, cycle, stage, detail=_describe(exc), started_at=started
        )
        raise LoopStepError(ctx.name, stage, exc) from exc


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _run_step(ctx: _Context, cycle: int, step: str) -> StepReport:
    started = utcnow_naive()
    loop_state.step_started(ctx.con, ctx.name, step)
    try:
        result = STEP_FUNCTIONS[step](ctx)
    except Exception as exc:
        # Any failure of a step (VW, storage, data) is recorded, then the cycle stops: the
        # next cycle starts afresh and the durable state says what is still to do.
        loop_state.step_finished(
            ctx.con, ctx.name, cycle, step, status="failed", detail=str(exc), started_at=started
        )
        raise LoopStepError(ctx.name, step, exc) from exc
    loop_state.step_finished(
        ctx.con,
        ctx.name,
        cycle,
        step,
        status=result.status,
        detail=result.detail,
        started_at=started,
        results=result.results,
    )
    logger.info("%s cycle %d %s: %s (%s)", ctx.name, cycle, step, result.status, result.detail)
    return StepReport(step, result.status, result.detail)


def run_loop(
    settings: Settings,
    experiments: Sequence[str] | None,
    *,
    every: float,
    once: bool,
    stop: threading.Event,
    on_cycle: Callable[[CycleReport], None] | None = None,
    on_failure: Callable[[str, BaseException, float], None] | None = None,
    work_dir: Path | None = None,
    settings_source: Callable[[], Settings] | None = None,
    mode_switch: ModeSwitch | None = None,
) -> None:
    """Run cycles every `every` seconds until `stop` is set (or once). Caller holds the lock.

    `experiments`: the names to run, or None for every experiment the settings have.
    `settings_source`, when given, is asked for the settings before each round (the
    experiment catalog), so a daemon runs an experiment created, changed or archived while
    it runs; a named experiment no longer there is skipped with a warning.

    A daemon (not `once`) survives every failure but a fatal one (`is_fatal`: bad settings,
    a damaged warehouse): it records the failure, backs off (`Backoff`) and tries again.
    `on_failure(experiment, error, delay)` hears of each failure survived.
    """
    backoff = Backoff(every)
    unrecorded: list[Outage] = []
    while not stop.is_set():
        started = time.monotonic()
        try:
            failed = False
            try:
                current = settings if settings_source is None else settings_source()
            except Exception as exc:
                if once or is_fatal(exc):
                    raise
                failed = True
                delay = backoff.next_delay()
                logger.warning("could not read the experiments; retrying in %.0fs: %s", delay, exc)
                if on_failure is not None:
                    on_failure("(experiments)", exc, delay)
                current, names = settings, []
            else:
                names = _names(current, experiments)
            for name in names:
                try:
                    report = run_cycle(
                        current,
                        name,
                        work_dir=work_dir,
                        unrecorded=unrecorded,
                        mode_switch=mode_switch,
                    )
                except Exception as exc:
                    if once or is_fatal(exc):
                        damage = corruption_cause(exc)
                        if damage is not None and not isinstance(damage, WarehouseCorrupt):
                            raise WarehouseCorrupt(settings.warehouse.path, damage) from exc
                        raise
                    failed = True
                    delay = backoff.next_delay()
                    if not isinstance(exc, LoopStepError):
                        # Not recorded yet: the warehouse could not be opened or written.
                        unrecorded.append(Outage.of(name, exc, started_at=utcnow_naive()))
                    if isinstance(exc, LoopStepError | TransientError):
                        logger.warning(
                            "cycle of %s failed; retrying in %.0fs: %s", name, delay, _describe(exc)
                        )
                    else:  # not foreseen: keep the traceback
                        logger.exception("cycle of %s failed; retrying in %.0fs", name, delay)
                    if on_failure is not None:
                        on_failure(name, exc, delay)
                    continue
                if on_cycle is not None:
                    on_cycle(report)
                if stop.is_set():
                    return
        finally:
            # Failed cycles too: the dashboard shows that the loop is failing. Never raises.
            publish_quietly(settings)
        if once:
            return
        if failed:
            stop.wait(backoff.current)
        else:
            backoff.reset()
            stop.wait(max(0.0, every - (time.monotonic() - started)))


def _names(settings: Settings, experiments: Sequence[str] | None) -> list[str]:
    if experiments is None:
        return list(settings.experiments)
    gone = [n for n in experiments if n not in settings.experiments]
    if gone:
        logger.warning("skipping experiments that are not active: %s", ", ".join(gone))
    return [n for n in experiments if n in settings.experiments]
