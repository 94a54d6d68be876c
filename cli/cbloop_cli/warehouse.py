"""`cbloop migrate | ingest | join | report`: the warehouse side of the pipeline."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, cast

import orjson
import typer

from cbloop.settings import Settings
from cbloop_cli.common import ConfigOption, settings_from
from cbloop_cli.errors import fail
from cbloop_cli.experiments import catalog_settings_from

if TYPE_CHECKING:
    import duckdb

logger = logging.getLogger(__name__)


@contextmanager
def _warehouse(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """The warehouse connection for one command; a file damaged where only a query reaches
    it is reported like one that does not open (`WarehouseCorrupt`)."""
    import duckdb

    from cbloop_pipeline.warehouse import WarehouseCorrupt, connect, is_corruption

    con = connect(settings.warehouse)
    try:
        yield con
    except duckdb.Error as exc:
        # A damaged file may open and fail only when a query reaches the damaged block.
        if is_corruption(exc):
            raise WarehouseCorrupt(settings.warehouse.path, exc) from exc
        raise
    finally:
        con.close()


def register(app: typer.Typer) -> None:
    @app.command()
    def migrate(config: ConfigOption = None) -> None:
        """Create or upgrade the warehouse schema (every pipeline command also does this)."""
        from cbloop_pipeline.warehouse import applied_migrations

        with _warehouse(settings_from(config)) as con:
            for version, name, applied_at in applied_migrations(con):
                typer.echo(f"{version:04d}_{name}  applied {applied_at:%Y-%m-%d %H:%M:%S}Z")

    @app.command()
    def ingest(config: ConfigOption = None) -> None:
        """Load every closed decision and outcome segment not loaded yet (exactly once)."""
        from cbloop.storage import open_store
        from cbloop_pipeline.ingest import ingest as run_ingest

        settings = settings_from(config)
        with _warehouse(settings) as con:
            result = run_ingest(con, open_store(settings.storage))
        typer.echo(
            f"ingested {result.segments} segments: {result.decision_lines} decisions, "
            f"{result.outcome_lines} outcomes, {result.rejected_lines} rejected lines"
        )

    @app.command()
    def join(
        experiment: Annotated[
            str, typer.Option("--experiment", "-e", help="Experiment to join")
        ] = "default",
        as_of: Annotated[
            str | None,
            typer.Option(
                "--as-of",
                help="Join decisions whose reward window closed by this ISO-8601 time "
                "(UTC unless it has an offset; default: now)",
            ),
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the job as JSON")] = False,
        config: ConfigOption = None,
    ) -> None:
        """Join decisions to their rewards and export train/eval DSJSON for VW."""
        from cbloop.storage import open_store
        from cbloop_pipeline.join import parse_as_of, run_join

        settings = catalog_settings_from(config)
        exp_settings = settings.experiment(experiment)
        moment = parse_as_of(as_of) if as_of is not None else None
        with _warehouse(settings) as con:
            result = run_join(
                con, open_store(settings.storage), experiment, exp_settings, as_of=moment
            )
        if as_json:
            typer.echo(orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2).decode())
            return
        typer.echo(
            f"join {result.join_id}: {result.joined} joined ({result.rewarded} rewarded, "
            f"{result.defaulted} defaulted), {result.skipped} skipped, "
            f"{result.train_events} train / {result.eval_events} eval; "
            f"rewards: {result.rewards_used} used, {result.late_rewards} late, "
            f"{result.early_rewards} early, {result.orphan_rewards} orphan, "
            f"{result.duplicate_rewards} duplicate; "
            f"{result.duplicate_decisions} duplicate decisions"
        )
        typer.echo(f"  {result.train_key}\n  {result.eval_key}")

    @app.command()
    def report(
        experiment: Annotated[
            str, typer.Option("--experiment", "-e", help="Experiment to report on")
        ] = "default",
        fmt: Annotated[str, typer.Option("--format", "-f", help="table | json | csv")] = "table",
        by: Annotated[
            str, typer.Option("--by", help="Rows per: hour (and model) | model | experiment")
        ] = "hour",
        config: ConfigOption = None,
    ) -> None:
        """Per hour/model/experiment: decisions, rewards (95% CI), exploration, late rewards."""
        from rich.console import Console

        from cbloop_pipeline.report import Format, Grouping, experiment_report, render

        if fmt not in ("table", "json", "csv"):
            fail(f"--format must be table, json or csv, not {fmt!r}")
        if by not in ("hour", "model", "experiment"):
            fail(f"--by must be hour, model or experiment, not {by!r}")
        from cbloop_pipeline.quarantine import quarantine_summary

        settings = catalog_settings_from(config)
        if experiment not in settings.experiments:
            known = ", ".join(sorted(settings.experiments))
            fail(f"unknown experiment {experiment!r} (active: {known})")
        with _warehouse(settings) as con:
            result = experiment_report(con, experiment, cast(Grouping, by))
            quarantined = quarantine_summary(con, experiment)
        # The terminal's width (rich reads it, or $COLUMNS; 80 when not a terminal).
        typer.echo(render(result, cast(Format, fmt), width=Console().width))
        why = quarantined.line(experiment)
        if fmt == "table" and why is not None:
            typer.echo(why)

    @app.command("rebuild-warehouse")
    def rebuild_warehouse(
        force: Annotated[
            bool,
            typer.Option("--force", help="Rebuild even though the warehouse file reads fine."),
        ] = False,
        config: ConfigOption = None,
    ) -> None:
        """Rebuild a damaged warehouse from the event log, the joins' manifests and the models.

        The damaged file is moved aside (never deleted); closed segments are ingested again,
        recorded joins replayed at their times, the model registry mirrored again. The loop's
        step history is not rebuilt.
        """
        from cbloop_pipeline.lock import LockHeld, exclusive_lock
        from cbloop_pipeline.rebuild import rebuild_warehouse as run_rebuild
        from cbloop_pipeline.rebuild import warehouse_is_healthy

        settings = settings_from(config)
        path = settings.warehouse.path
        try:
            # The loop's lock: no loop may write the warehouse while it is being replaced.
            with exclusive_lock(settings.pipeline.lock_path):
                if not force and warehouse_is_healthy(settings):
                    fail(f"warehouse {path} reads fine; pass --force to rebuild it anyway")
                result = run_rebuild(settings)
        except LockHeld as exc:
            fail(f"{exc}; stop the learning loop before rebuilding the warehouse", code=3)
        for moved in result.moved_aside:
            typer.echo(f"moved aside: {moved}")
        typer.echo(
            f"rebuilt {path}: {result.ingest.segments} segments ingested "
            f"({result.ingest.decision_lines} decisions, {result.ingest.outcome_lines} outcomes, "
            f"{result.ingest.rejected_lines} rejected), {result.joins_replayed} joins replayed, "
            f"{result.models_mirrored} models mirrored"
        )
        if result.joins_differing:
            typer.echo(f"  replayed under another id: {', '.join(result.joins_differing)}")
        if result.joins_skipped:
            typer.echo(
                f"  not replayed (experiment not configured): {', '.join(result.joins_skipped)}"
            )
        typer.echo("  not rebuilt: the learning loop's step history (the next loop starts afresh)")
