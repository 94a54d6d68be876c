"""`cbloop train | evaluate | deploy | rollback | loop`: the learning half of the pipeline."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cbloop.settings import Settings
from cbloop_cli.common import ConfigOption, settings_from
from cbloop_cli.errors import fail
from cbloop_cli.experiments import catalog_settings, catalog_settings_from, open_catalog

if TYPE_CHECKING:
    from cbloop_pipeline.deploy import Decision
    from cbloop_pipeline.loop import CycleReport
    from cbloop_pipeline.train import TrainOutcome

logger = logging.getLogger(__name__)

ExperimentOption = Annotated[
    str, typer.Option("--experiment", "-e", help="Experiment name (from the config).")
]


def _label_column(text: str | None) -> str | int | None:
    """A column index when the text is an integer, else a header name."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def _print_train(outcome: TrainOutcome) -> None:
    if outcome.refused is not None:
        joins = ", ".join(outcome.refused.joins) or "-"
        fail(f"{outcome.reason}; joins set aside: {joins}", code=1)
    if outcome.model is None:
        typer.echo(f"nothing trained: {outcome.reason}")
        return
    meta, stats = outcome.model, outcome.stats
    typer.echo(f"model {meta.model_id} (parent {meta.parent_id or 'none: fresh'})")
    typer.echo(f"  joins learned:     {', '.join(meta.joins) or '-'}")
    typer.echo(f"  events learned:    {meta.events_trained}")
    if meta.progressive_loss is not None:
        typer.echo(f"  progressive loss:  {meta.progressive_loss:.6f}")
    if stats is not None:
        typer.echo(
            f"  VW time:           {stats.seconds:.2f}s ({stats.examples_per_second:,.0f} ex/s)"
        )


def _print_evaluation(record: dict[str, Any], root: Path | None) -> None:
    """`root`: the local storage folder, to show files rather than object keys."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{record['eval_id']}: {record['n_events']} eval events")
    for column in ("policy", "model", "estimator", "value", "95% interval", "ESS", "max w"):
        table.add_column(column)
    for role in ("candidate", "deployed", "logging"):
        body = record["policies"].get(role)
        if not body:
            continue
        for name, est in body["estimates"].items():
            value = est["value"]
            table.add_row(
                role,
                body.get("model_id") or "-",
                name + (" *" if name == record["primary_estimator"] else ""),
                "n/a" if value is None else f"{value:.5f}",
                "n/a" if est["ci_low"] is None else f"[{est['ci_low']:.5f}, {est['ci_high']:.5f}]",
                f"{est['ess']:.1f}",
                "-" if est.get("max_weight") is None else f"{est['max_weight']:.2f}",
            )
    Console().print(table)
    if "baseline" in record:
        typer.echo(f"promotion baseline: {record['baseline']}")
    for role in ("candidate", "deployed"):
        body = record["policies"].get(role) or {}
        for name, est in body.get("estimates", {}).items():
            if est.get("reason"):
                typer.echo(f"{role} {name} undefined: {est['reason']}")

    def where(key: str) -> str:
        return str(root / key) if root is not None else key

    typer.echo(f"per-event figures: {where(record['events_key'])}")
    typer.echo(f"summary:           {where(record['summary_key'])}")
    if "plot_key" in record:
        typer.echo(f"plot:              {where(record['plot_key'])}")


def _print_decision(decision: Decision) -> None:
    if decision.action == "rollback":
        typer.echo(f"rolled back to {decision.model_id} (from {decision.previous_model_id})")
    elif decision.promoted:
        typer.echo(f"deployed {decision.model_id} (was {decision.previous_model_id})")
    else:
        typer.echo(f"not promoted: {decision.model_id}; {decision.previous_model_id} stays")
    typer.echo(f"  reason: {decision.reason}")
    typer.echo(f"  decision: {decision.decision_id}")


def _print_cycle(report: CycleReport) -> None:
    resumed = f" (resumed at {report.resumed_at})" if report.resumed_at else ""
    typer.echo(f"{report.experiment} cycle {report.cycle}{resumed}")
    for step in report.steps:
        typer.echo(f"  {step.step:<9} {step.status:<8} {step.detail}")


def _print_waiting(settings: Settings, name: str) -> None:
    """After `loop --once`: what learning is still waiting for (windows, open segments, events)."""
    from cbloop_pipeline.waiting import waiting
    from cbloop_pipeline.warehouse import connect

    # Runs inside the loop's cycle callback: an explanation that fails must not fail the loop.
    try:
        con = connect(settings.warehouse)
        try:
            lines = waiting(con, settings, name).lines()
        finally:
            con.close()
    except Exception:
        logger.exception("could not tell what %s is waiting for", name)
        return
    if lines:
        typer.echo("  waiting:")
        for line in lines:
            typer.echo(f"    {line}")


def _apply_retention(settings: Settings) -> None:
    """Retention after a cycle; a failure is logged and the loop goes on (next cycle retries)."""
    if not settings.retention.enabled():
        return
    from cbloop_cli.retention import print_gc, run_retention

    try:
        result = run_retention(settings, dry_run=False)
    except Exception:
        # The top of the daemon's housekeeping: whatever broke (store, warehouse, a model's
        # metadata), learning goes on and the next cycle tries again.
        logger.exception("retention failed; retrying after the next cycle")
        return
    if result.items:
        print_gc(result)


def _print_failure(experiment: str, error: BaseException, delay: float) -> None:
    typer.secho(
        f"{experiment}: cycle failed, retrying in {delay:.0f}s: {error}",
        err=True,
        fg=typer.colors.YELLOW,
    )


def register(app: typer.Typer) -> None:
    @app.command()
    def train(
        *,
        experiment: ExperimentOption = "default",
        parent: Annotated[
            str | None, typer.Option("--parent", help="Continue from this model id.")
        ] = None,
        fresh: Annotated[
            bool, typer.Option("--fresh", help="Start from an untrained model.")
        ] = False,
        warm_start: Annotated[
            Path | None,
            typer.Option(
                "--warm-start",
                help="Learn this file instead of joins: DSJSON history, or a labelled table "
                "(CSV or whitespace-separated) turned into uniform-policy events.",
                exists=True,
                dir_okay=False,
            ),
        ] = None,
        label_column: Annotated[
            str | None,
            typer.Option(
                "--label-column",
                help="Table warm start: label column name or index (default: last).",
            ),
        ] = None,
        events: Annotated[
            int | None,
            typer.Option(
                "--events",
                min=0,
                help="Table warm start: events to generate (default: one per row).",
            ),
        ] = None,
        seed: Annotated[int, typer.Option("--seed", help="Table warm start: seed.")] = 0,
        config: ConfigOption = None,
    ) -> None:
        """Train a new model on joins its parent has not learned (or on a warm-start file)."""
        from rich.console import Console

        from cbloop_pipeline.learning import train_command
        from cbloop_pipeline.warm_start import WarmStartOptions

        settings = catalog_settings_from(config)
        options = WarmStartOptions(_label_column(label_column), events, seed)
        with Console(stderr=True).status(f"training {experiment} ..."):
            outcome = train_command(
                settings,
                experiment,
                parent=parent,
                fresh=fresh,
                warm_start=warm_start,
                warm_start_options=options,
            )
        _print_train(outcome)

    @app.command()
    def evaluate(
        *,
        experiment: ExperimentOption = "default",
        model: Annotated[
            str | None,
            typer.Option("--model", help="Model to evaluate (default: the newest candidate)."),
        ] = None,
        join: Annotated[
            list[str] | None,
            typer.Option("--join", help="Use this join's eval split (repeatable; default: all)."),
        ] = None,
        folds: Annotated[int, typer.Option("--folds", min=2, help="Reward-model folds.")] = 2,
        seed: Annotated[int, typer.Option("--seed", help="Reward-model fold seed.")] = 0,
        bootstrap: Annotated[
            int,
            typer.Option(
                "--bootstrap", min=0, help="Bootstrap replicates for the intervals (0: normal)."
            ),
        ] = 0,
        plot: Annotated[
            bool, typer.Option("--plot", help="Also write a PNG of the estimates.")
        ] = False,
        config: ConfigOption = None,
    ) -> None:
        """Estimate the model, the deployed model and the logging policy (IPS, SNIPS, DR,
        SNDR, Switch-DR; the deployed model also on the events it served)."""
        from rich.console import Console

        from cbloop_pipeline.evaluate import EvaluateOptions
        from cbloop_pipeline.learning import evaluate_command

        settings = catalog_settings_from(config)
        options = EvaluateOptions(folds=folds, seed=seed, plot=plot, bootstrap=bootstrap)
        with Console(stderr=True).status(f"evaluating {experiment} ..."):
            record = evaluate_command(
                settings, experiment, model_id=model, joins=join or (), options=options
            )
        local = settings.storage.backend == "local"
        _print_evaluation(record, settings.storage.root if local else None)

    @app.command()
    def deploy(
        *,
        experiment: ExperimentOption = "default",
        model: Annotated[
            str | None,
            typer.Option("--model", help="Candidate (default: the newest trained model)."),
        ] = None,
        force: Annotated[
            bool, typer.Option("--force", help="Deploy without applying the promotion rule.")
        ] = False,
        config: ConfigOption = None,
    ) -> None:
        """Apply the promotion rule and point the experiment at the candidate if it wins."""
        from cbloop_pipeline.learning import deploy_command

        settings = catalog_settings_from(config)
        decision = deploy_command(settings, experiment, model_id=model, force=force)
        _print_decision(decision)

    @app.command()
    def rollback(
        *,
        experiment: ExperimentOption = "default",
        to: Annotated[
            str | None,
            typer.Option("--to", help="Model to point back to (default: the one live before)."),
        ] = None,
        config: ConfigOption = None,
    ) -> None:
        """Point the experiment back at an earlier model."""
        from cbloop_pipeline.learning import rollback_command

        settings = catalog_settings_from(config)
        decision = rollback_command(settings, experiment, to=to)
        _print_decision(decision)

    @app.command()
    def loop(
        *,
        experiment: Annotated[
            list[str] | None,
            typer.Option(
                "--experiment",
                "-e",
                help="Experiment to run (repeatable; default: every active experiment).",
            ),
        ] = None,
        every: Annotated[
            str | None,
            typer.Option("--every", help="Cycle period, e.g. 30s, 5m (default: pipeline.every)."),
        ] = None,
        once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit.")] = False,
        config: ConfigOption = None,
    ) -> None:
        """Ingest, join, train, evaluate and deploy, every DURATION (one loop at a time)."""
        from cbloop.settings import parse_duration
        from cbloop_cli.personalizer_evaluations import run_after_cycle
        from cbloop_pipeline.graduation import CatalogModeSwitch
        from cbloop_pipeline.lock import LockHeld, exclusive_lock
        from cbloop_pipeline.loop import run_loop

        base = settings_from(config)
        # The catalog again before every round: experiments created, changed or archived
        # while the daemon runs are followed without a restart.
        latest = [catalog_settings(base)]

        def _refresh() -> Settings:
            latest[0] = catalog_settings(base)
            return latest[0]

        settings = latest[0]
        for name in experiment or ():
            settings.experiment(name)
        period = parse_duration(every or settings.pipeline.every)
        stop = threading.Event()

        def _stop(signum: int, frame: object) -> None:
            del frame
            logger.info("signal %d: stopping after the current cycle", signum)
            stop.set()

        # Restored afterwards: the command may run inside another program (tests, simulate).
        def _after_cycle(report: CycleReport) -> None:
            _print_cycle(report)
            if once:
                _print_waiting(latest[0], report.experiment)
            _apply_retention(latest[0])
            run_after_cycle(latest[0], report.experiment)

        previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with exclusive_lock(settings.pipeline.lock_path):
                run_loop(
                    settings,
                    experiment or None,
                    settings_source=_refresh,
                    every=period,
                    once=once,
                    stop=stop,
                    on_cycle=_after_cycle,
                    on_failure=_print_failure,
                    # A graduated apprentice becomes online in the catalog, so the workers
                    # serve it online within a poll.
                    mode_switch=CatalogModeSwitch(open_catalog(base)),
                )
        except LockHeld as exc:
            # Its own status, so that a scheduler can tell "already running" from a failure.
            fail(f"{exc}; only one learning loop may run at a time", code=3)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
