"""`cbloop evaluations run`: run the offline evaluations and feature importances asked for
over the Personalizer API.

The learning loop runs them after each cycle (`run_after_cycle`); this command runs them at
once (e.g. while no loop runs). Both read the experiment's finished joins (the warehouse
opened read-only) and write only the store (cbloop.evaluation_requests).
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cbloop.settings import Settings
from cbloop_cli.common import ConfigOption
from cbloop_cli.experiments import catalog_settings_from

logger = logging.getLogger(__name__)


def run_requests(
    settings: Settings, name: str, *, only: str | None = None
) -> list[tuple[str, str, str]]:
    """Run experiment `name`'s pending evaluations and feature importances; (kind, id,
    status) of each run."""
    from cbloop.evaluation_requests import EVALUATIONS, FEATURE_IMPORTANCES, pending_requests
    from cbloop.storage import open_store
    from cbloop_pipeline.join_catalog import finished_joins
    from cbloop_pipeline.personalizer_evaluations import run_pending
    from cbloop_pipeline.personalizer_feature_importances import run_pending_importances
    from cbloop_pipeline.warehouse import connect

    experiment = settings.experiment(name)
    store = open_store(settings.storage)
    kinds = [k for k in (EVALUATIONS, FEATURE_IMPORTANCES) if pending_requests(store, name, k)]
    if not kinds:
        return []  # no warehouse connection for nothing: the loop calls this every cycle
    con = connect(settings.warehouse, read_only=True)
    try:
        joins = finished_joins(con, name)
    finally:
        con.close()
    done: list[tuple[str, str, str]] = []
    if EVALUATIONS in kinds:
        ran = run_pending(store, name, experiment, joins, only=only)
        done += [("evaluation", i, s) for i, s in ran]
    if FEATURE_IMPORTANCES in kinds:
        ran = run_pending_importances(store, name, experiment, joins, only=only)
        done += [("feature importance", i, s) for i, s in ran]
    return done


def run_after_cycle(settings: Settings, name: str) -> None:
    """The loop's hook: a failure is logged and the next cycle tries again."""
    try:
        done = run_requests(settings, name)
    except Exception:
        # The top of the daemon's housekeeping: learning goes on whatever broke here.
        logger.exception(
            "Personalizer evaluations of %s failed; retrying after the next cycle", name
        )
        return
    for kind, evaluation_id, status in done:
        typer.echo(f"{name}: {kind} {evaluation_id} {status}")


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        name="evaluations",
        help="Offline evaluations and feature importances asked for over the Personalizer API.",
        no_args_is_help=True,
    )
    app.add_typer(group)

    @group.command("run")
    def run(
        *,
        experiment: Annotated[
            str, typer.Option("--experiment", "-e", help="Experiment name.")
        ] = "default",
        evaluation_id: Annotated[
            str | None,
            typer.Option(
                "--id",
                help="Only this evaluation or feature importance (default: every pending one).",
            ),
        ] = None,
        config: ConfigOption = None,
    ) -> None:
        """Run the pending evaluations now and write their results to the store."""
        settings = catalog_settings_from(config)
        done = run_requests(settings, experiment, only=evaluation_id)
        if not done:
            typer.echo(
                f"{experiment}: no pending evaluation"
                + (f" {evaluation_id!r}" if evaluation_id else "")
            )
        for kind, eid, status in done:
            typer.echo(f"{experiment}: {kind} {eid} {status}")
