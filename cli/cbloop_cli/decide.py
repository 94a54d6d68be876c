"""`cbloop decide`: choose for a whole file of contexts with the served policy."""

from __future__ import annotations

import os
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from cbloop.errors import CbloopError
from cbloop_cli.common import ConfigOption
from cbloop_cli.errors import fail
from cbloop_cli.experiments import catalog_settings_from

#: Bad lines printed one by one; past this only the count is printed.
_BAD_LINES_SHOWN = 20


def register(app: typer.Typer) -> None:
    @app.command()
    def decide(
        source: Annotated[
            Path,
            typer.Argument(
                help=(
                    "JSON lines, one rank request per line (the body of POST /v1/rank), or a "
                    "Parquet file (.parquet), one request per row"
                ),
                exists=True,
                dir_okay=False,
                readable=True,
            ),
        ],
        *,
        experiment: Annotated[str, typer.Option("-e", "--experiment", help="Experiment")] = (
            "default"
        ),
        out: Annotated[
            Path | None,
            typer.Option("--out", help="Answers, one JSON line per decided line (default: stdout)"),
        ] = None,
        model: Annotated[
            str | None, typer.Option("--model", help="Model id (default: the current model)")
        ] = None,
        no_log: Annotated[
            bool,
            typer.Option("--no-log", help="Only score: log nothing, so nothing is learned from it"),
        ] = False,
        workers: Annotated[
            int | None,
            typer.Option("--workers", min=1, help="Processes (default: the number of cores)"),
        ] = None,
        config: ConfigOption = None,
    ) -> None:
        """Decide every line of SOURCE as /v1/rank would, in input order.

        Decisions are logged like online ones (rewards posted later to
        /v1/events/{id}/reward join and train); a line without event_id gets one derived
        from the file's content and the line number, so a re-run gives the same choices.
        Bad lines are reported with their numbers and skipped; the exit code is 1 when any
        line was bad.
        """
        from cbloop_service.batch import BatchOptions, run_batch
        from cbloop_service.batch_input import count_inputs

        settings = catalog_settings_from(config)
        options = BatchOptions(
            experiment=experiment,
            model_id=model,
            log=not no_log,
            workers=workers or min(os.cpu_count() or 1, 8),
        )
        err = Console(stderr=True)
        try:
            total = count_inputs(source)
        except CbloopError as exc:
            fail(str(exc), code=2)
        with ExitStack() as stack:
            scratch = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="cbloop-decide-"))
            )
            sink: IO[bytes] = (
                stack.enter_context(out.open("wb")) if out is not None else sys.stdout.buffer
            )
            progress = stack.enter_context(
                Progress(
                    TextColumn("deciding"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"),
                    TimeElapsedColumn(),
                    console=err,
                    transient=False,
                )
            )
            task = progress.add_task("decide", total=total, rate="")
            done = 0

            def advance(n: int) -> None:
                nonlocal done
                done += n
                if done % 1000 == 0 or done == total:
                    elapsed = progress.tasks[task].elapsed or 0.0
                    rate = f"{done / elapsed:,.0f}/s" if elapsed > 0 else ""
                    progress.update(task, completed=done, rate=rate)

            try:
                summary = run_batch(
                    settings, options, source, sink, scratch=scratch, on_progress=advance
                )
            except CbloopError as exc:
                progress.stop()
                fail(f"{exc}{'; ' + exc.hint if exc.hint else ''}", code=1)
            progress.update(task, completed=done)
        for bad in summary.bad[:_BAD_LINES_SHOWN]:
            err.print(f"line {bad.line}: {bad.message}", markup=False, highlight=False)
        if summary.bad_count > _BAD_LINES_SHOWN:
            err.print(f"... and {summary.bad_count - _BAD_LINES_SHOWN} more bad lines")
        where = "logged" if summary.logged else "not logged (--no-log)"
        err.print(
            f"{summary.decided} decided with model {summary.model_id} ({where}), "
            f"{summary.bad_count} bad lines skipped",
            markup=False,
            highlight=False,
        )
        if summary.bad_count:
            raise typer.Exit(1)
