"""`cbloop simulate`: does it learn, and how fast? The whole system against a simulated world."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cbloop.logs import configure_logging
from cbloop.settings import LoggingSettings
from cbloop_cli.common import ConfigOption
from cbloop_cli.errors import fail

if TYPE_CHECKING:
    from cbloop_pipeline.simulate.results import LoopRecord

# Defaults per world: the reference statlog workflow for tables; for the synthetic world a
# sub-minute demo. Rounds of 500 give the promotion rule ~100 eval events per round; with
# 300, noisy estimates kept better candidates out for most of the demo.
#: The started service is this installation's own `cbloop serve` (python -m cbloop_cli).
SERVE_COMMAND = (sys.executable, "-m", "cbloop_cli", "serve")

TABLE_DEFAULTS = {"loops": 15, "per_loop": 500}
SYNTHETIC_DEFAULTS = {"loops": 6, "per_loop": 500}


def _label_col(value: str | None) -> str | int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def simulate(
    *,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A labelled table (CSV or whitespace-separated): each class is an action, "
            "reward 1 for the row's class. Implies --world table.",
            dir_okay=False,
        ),
    ] = None,
    world: Annotated[
        str | None,
        typer.Option(
            "--world",
            help="'table' (needs --data) or 'synthetic' (users x items, Bernoulli clicks; "
            "the default without --data).",
        ),
    ] = None,
    label_col: Annotated[
        str | None,
        typer.Option("--label-col", help="Class column: header name or index (default: last)."),
    ] = None,
    warm_start: Annotated[
        int, typer.Option("--warm-start", help="Uniform-policy events the first model learns.")
    ] = 100,
    loops: Annotated[
        int | None,
        typer.Option("--loops", help="Rounds of serving then retraining (table 15, synthetic 6)."),
    ] = None,
    per_loop: Annotated[
        int | None,
        typer.Option("--per-loop", help="Interactions per round (default 500)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the stream and the world.")] = 0,
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Output folder (summary, CSV, plots; state/ inside).", file_okay=False
        ),
    ] = Path("simulation-out"),
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="Target a running service instead of starting one (needs --config with its "
            "settings).",
        ),
    ] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="Experiment name.")] = "default",
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes of the started service.")
    ] = 1,
    concurrency: Annotated[
        int, typer.Option("--concurrency", help="HTTP requests in flight at once.")
    ] = 8,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="CBLOOP_API_KEY",
            help="API key for a --url service (an admin key if it has admin keys: the "
            "simulator reads which model is served).",
        ),
    ] = None,
    dashboard_snapshot: Annotated[
        Path | None,
        typer.Option(
            "--dashboard-snapshot",
            help="Also write a static copy of the run's dashboard (pages, JSON, assets, "
            "snapshot.duckdb) to this folder; open its index.html.",
            file_okay=False,
        ),
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the pipeline's log lines.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Run the system in a closed loop against a world and compare it with baselines.

    Starts `cbloop serve`, sends rank requests and the world's rewards over HTTP, runs the
    pipeline (ingest, join, train, evaluate, deploy) between rounds, and writes summary.json,
    summary.md, interactions.csv, reward_per_loop.png and ope_vs_realized.png to --out.

    Without --url the simulated deployment is generated under OUT/state (config.yaml, event
    store, warehouse, models, service.log) and wiped by the next run. With --url, --config
    names that service's settings: this process then runs the pipeline on its event store.
    """
    from rich.console import Console

    from cbloop_pipeline.simulate.runner import SimulationOptions, run_simulation

    kind = world or ("table" if data is not None else "synthetic")
    if kind not in ("table", "synthetic"):
        fail(f"--world must be 'table' or 'synthetic', not {kind!r}")
    if kind == "synthetic" and data is not None:
        fail("--data goes with --world table")
    defaults = TABLE_DEFAULTS if kind == "table" else SYNTHETIC_DEFAULTS
    options = SimulationOptions(
        out=out,
        world="table" if kind == "table" else "synthetic",
        data=data,
        label_col=_label_col(label_col),
        warm_start=warm_start,
        loops=loops if loops is not None else defaults["loops"],
        per_loop=per_loop if per_loop is not None else defaults["per_loop"],
        seed=seed,
        url=url,
        config=config,
        experiment=experiment,
        workers=workers,
        concurrency=concurrency,
        api_key=api_key,
        service_log_level="INFO" if verbose else "WARNING",
        serve_command=SERVE_COMMAND,
        dashboard_snapshot=dashboard_snapshot,
    )
    # The simulation's own deployment is quiet unless asked: progress lines are the output.
    configure_logging(LoggingSettings(level="INFO" if verbose else "WARNING", format="text"))
    console = Console()

    def loop_done(record: LoopRecord) -> None:
        ope = ""
        if record.ope is not None:
            ope = f"  OPE {record.ope.value:.3f}"
            if record.ope.ci_low is not None and record.ope.ci_high is not None:
                ope += f" [{record.ope.ci_low:.3f}, {record.ope.ci_high:.3f}]"
        console.print(
            f"loop {record.loop:>2}/{options.loops}  reward {record.mean_reward:.3f}  "
            f"online VW {record.online_vw:.3f}  oracle {record.oracle:.3f}{ope}  "
            f"model {record.model_id}  "
            f"(play {record.play_seconds:.1f}s, pipeline {record.pipeline_seconds:.1f}s)"
        )

    with console.status("simulating...") as status:

        def progress(message: str) -> None:
            console.print(message)
            status.update(message)

        result = run_simulation(options, progress=progress, loop_done=loop_done)
    _print_tables(console, result.loops, result.summary)


def _print_tables(console: Any, loops: list[LoopRecord], summary: dict[str, Any]) -> None:
    from rich.table import Table

    from cbloop_pipeline.simulate import report

    table = Table(title="per loop")
    for i, name in enumerate(report.LOOP_HEADER):
        table.add_column(name, justify="left" if i == 1 else "right")
    for cells in report.loop_rows(loops):
        table.add_row(*cells)
    console.print(table)
    totals = Table(title="totals", show_header=False)
    totals.add_column("what")
    totals.add_column("value", justify="right")
    for name, value in report.totals_rows(summary["totals"]):
        totals.add_row(name, value)
    totals.add_row("wall time", f"{summary['wall_seconds']:.1f} s")
    console.print(totals)


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)
