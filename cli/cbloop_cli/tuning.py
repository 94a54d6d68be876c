"""`cbloop search | features`: policy search over learning settings, and feature evaluation.

Both train fresh models on the experiment's joined train splits and score them off-policy on
its eval splits (cbloop_pipeline.tuning). `search --apply` hands the winner to the experiment
store (the next version of the experiment, with the evidence) and keeps a copy of the fragment
in the run folder (`winner.yaml`).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer
import yaml

from cbloop.settings import Settings
from cbloop_cli.common import ConfigOption
from cbloop_cli.experiments import CatalogWinnerSink, catalog_settings_from

if TYPE_CHECKING:
    from rich.progress import Progress

    from cbloop_pipeline.join_catalog import FinishedJoin
    from cbloop_pipeline.ope.estimators import Estimate
    from cbloop_pipeline.tuning.features import FeatureReport
    from cbloop_pipeline.tuning.search import SearchResult

ExperimentOption = Annotated[
    str, typer.Option("--experiment", "-e", help="Experiment name (from the config).")
]
EstimatorOption = Annotated[
    str | None,
    typer.Option(
        "--estimator",
        help="ips, snips, dr, sndr or switch_dr (default: the promotion estimator).",
    ),
]
FoldsOption = Annotated[int, typer.Option("--folds", min=2, help="Reward-model folds.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Reward-model fold seed.")]

WINNER_FILE = "winner.yaml"
SEARCH_JSON = "search.json"
SEARCH_CSV = "search.csv"
SEARCH_PNG = "search.png"
FEATURES_JSON = "features.json"
FEATURES_CSV = "features.csv"
FEATURES_PNG = "features.png"


class WinnerSink(Protocol):
    """Where `search --apply` puts a winning setting; returns where it went."""

    def apply_winner(
        self, experiment: str, vw_args: str, exploration: dict[str, Any], evidence: dict[str, Any]
    ) -> str: ...


class RunFolderSink:
    """Writes `winner.yaml` (an experiment fragment plus the evidence) into the run folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def apply_winner(
        self, experiment: str, vw_args: str, exploration: dict[str, Any], evidence: dict[str, Any]
    ) -> str:
        path = self.folder / WINNER_FILE
        body = {
            "experiments": {experiment: {"vw_args": vw_args, "exploration": exploration}},
            "evidence": evidence,
        }
        path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
        return str(path)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _interval(est: Estimate | None) -> str:
    if est is None:
        return "n/a"
    return f"[{_fmt(est.ci_low)}, {_fmt(est.ci_high)}]"


@contextmanager
def _inputs(settings: Settings, name: str) -> Iterator[tuple[Any, list[FinishedJoin]]]:
    """The store and the experiment's finished joins (the same joins `evaluate` uses)."""
    from cbloop.storage import open_store
    from cbloop_pipeline.join_catalog import finished_joins
    from cbloop_pipeline.warehouse import connect

    con = connect(settings.warehouse)
    try:
        joins = finished_joins(con, name)
    finally:
        con.close()
    yield open_store(settings.storage), joins


@contextmanager
def _progress(what: str) -> Iterator[tuple[Callable[[int], None], Callable[[], None]]]:
    """A rich progress bar on stderr: (start(total), advance())."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.progress import Progress as RichProgress

    bar: Progress = RichProgress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with bar:
        task = bar.add_task("preparing eval events and reward model", total=None)

        def start(total: int) -> None:
            bar.update(task, total=total, description=what)

        def advance() -> None:
            bar.advance(task)

        yield start, advance


def _search_rows(result: SearchResult) -> list[dict[str, Any]]:
    rows = []
    for rank, score in enumerate(result.ranked, start=1):
        est = score.estimate
        rows.append(
            {
                "rank": rank,
                "name": score.name,
                "vw_args": score.candidate.vw_args,
                "exploration": score.candidate.describe().split(" | ", 1)[1],
                "estimate": est.value if est else None,
                "ci_low": est.ci_low if est else None,
                "ci_high": est.ci_high if est else None,
                "ess": est.ess if est else None,
                "error": score.error or "",
            }
        )
    return rows


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _print_search(result: SearchResult) -> None:
    from rich.console import Console
    from rich.table import Table

    opts = result.options
    table = Table(
        title=f"{result.experiment}: {len(result.ranked)} settings, {opts.estimator} on "
        f"{result.eval_events} eval events ({opts.confidence:.0%} intervals)"
    )
    for column in ("#", "name", "vw_args", "exploration", "estimate", "interval", "ESS"):
        table.add_column(column, justify="right" if column in ("#", "estimate", "ESS") else "left")
    for row, score in zip(_search_rows(result), result.ranked, strict=True):
        est = score.estimate
        label = row["name"]
        table.add_row(
            str(row["rank"]),
            label,
            row["vw_args"],
            row["exploration"],
            _fmt(row["estimate"]) if not score.error else "failed",
            _interval(est) if not score.error else (score.error[:60]),
            _fmt(row["ess"], 1),
        )
    Console(width=max(Console().width, 120)).print(table)
    if result.lift is not None:
        d = result.lift
        typer.echo(
            f"winner {result.winner.name} minus current: {_fmt(d.value)} "
            f"[{_fmt(d.ci_low)}, {_fmt(d.ci_high)}] (paired, same events)"
        )


def _write_search(result: SearchResult, out: Path) -> None:
    from cbloop_pipeline.tuning.plot import plot_search

    _write_csv(out / SEARCH_CSV, _search_rows(result))
    plot_search(result, out / SEARCH_PNG)


def _feature_rows(report: FeatureReport) -> list[dict[str, Any]]:
    rows = []
    for e in report.effects:
        d = e.delta
        rows.append(
            {
                "vw_namespace": e.char,
                "namespaces": " ".join(e.namespaces),
                "estimate_without": e.estimate.value if e.estimate else None,
                "delta": d.value if d else None,
                "ci_low": d.ci_low if d else None,
                "ci_high": d.ci_high if d else None,
                "verdict": e.verdict,
                "error": e.error or "",
            }
        )
    return rows


def _print_features(report: FeatureReport) -> None:
    from rich.console import Console
    from rich.table import Table

    opts = report.options
    table = Table(
        title=f"{report.experiment}: {opts.estimator} {_fmt(report.full.value)} "
        f"{_interval(report.full)} with every namespace, {report.eval_events} eval events"
    )
    for column in ("ns", "namespaces", "without", "loss without it", "paired interval", "verdict"):
        table.add_column(column)
    for effect in report.effects:
        d = effect.delta
        table.add_row(
            effect.char,
            ", ".join(effect.namespaces),
            _fmt(effect.estimate.value) if effect.estimate else "failed",
            _fmt(d.value) if d else "n/a",
            f"[{_fmt(d.ci_low)}, {_fmt(d.ci_high)}]" if d else (effect.error or "")[:60],
            effect.verdict,
        )
    Console(width=max(Console().width, 100)).print(table)
    if report.warnings:
        typer.echo("warnings:")
        for warning in report.warnings:
            typer.echo(f"  {warning.kind}: {warning.message}")


def register(app: typer.Typer) -> None:
    @app.command()
    def search(
        *,
        experiment: ExperimentOption = "default",
        grid: Annotated[
            Path | None,
            typer.Option(
                "--grid",
                help="YAML grid of candidate settings (default: the built-in grid).",
                dir_okay=False,
            ),
        ] = None,
        estimator: EstimatorOption = None,
        out: Annotated[
            Path,
            typer.Option("--out", help="Folder for search.csv/.json/.png.", file_okay=False),
        ] = Path("search-out"),
        apply: Annotated[
            bool,
            typer.Option(
                "--apply",
                help="Adopt the winner if its lower bound beats the current settings' estimate.",
            ),
        ] = False,
        folds: FoldsOption = 5,
        seed: SeedOption = 0,
        config: ConfigOption = None,
    ) -> None:
        """Train candidate learning settings and rank them by off-policy estimate."""
        from cbloop_pipeline.tuning.grid import grid_candidates
        from cbloop_pipeline.tuning.search import SearchOptions, run_search

        settings = catalog_settings_from(config)
        exp = settings.experiment(experiment)
        candidates = grid_candidates(grid, exp)
        options = SearchOptions(
            estimator=estimator or exp.promotion.estimator, folds=folds, seed=seed
        )
        out.mkdir(parents=True, exist_ok=True)
        with (
            _inputs(settings, experiment) as (store, joins),
            _progress("training and scoring") as (
                start,
                advance,
            ),
        ):
            result = run_search(
                store,
                experiment,
                exp,
                joins,
                candidates,
                options=options,
                on_prepared=start,
                on_scored=lambda _score: advance(),
            )
        _print_search(result)
        _write_search(result, out)
        record = result.to_dict()
        decision = result.decision()
        if apply:
            record["decision"]["requested"] = True
            if decision.apply:
                winner = result.winner
                evidence = {
                    "estimator": options.estimator,
                    "winner": winner.to_dict(),
                    "current": result.current.to_dict(),
                    "rule": "winner's lower bound > current settings' point estimate",
                }
                # The store is where the experiment lives; the run folder keeps a copy of
                # the fragment beside the table that justified it.
                sinks: list[WinnerSink] = [CatalogWinnerSink(settings), RunFolderSink(out)]
                where = [
                    sink.apply_winner(
                        experiment,
                        winner.candidate.vw_args,
                        winner.candidate.exploration,
                        evidence,
                    )
                    for sink in sinks
                ]
                record["decision"]["applied_to"] = where[0]
                record["decision"]["copy"] = where[1]
                typer.echo(
                    f"applied {winner.name}: {decision.reason}; now {where[0]} (copy in {where[1]})"
                )
            else:
                typer.echo(f"not applied: {decision.reason}")
        else:
            record["decision"]["requested"] = False
            verdict = "would apply" if decision.apply else "would not apply"
            typer.echo(f"{verdict} with --apply: {decision.reason}")
        (out / SEARCH_JSON).write_text(json.dumps(record, indent=2), encoding="utf-8")
        typer.echo(f"results: {out / SEARCH_CSV}, {out / SEARCH_JSON}; plot: {out / SEARCH_PNG}")

    @app.command()
    def features(
        *,
        experiment: ExperimentOption = "default",
        estimator: EstimatorOption = None,
        out: Annotated[
            Path,
            typer.Option("--out", help="Folder for features.csv/.json/.png.", file_okay=False),
        ] = Path("features-out"),
        min_effect: Annotated[
            float,
            typer.Option(
                "--min-effect",
                min=0.0,
                help="Smallest change of the value per event that counts as an effect.",
            ),
        ] = 0.01,
        folds: FoldsOption = 5,
        seed: SeedOption = 0,
        config: ConfigOption = None,
    ) -> None:
        """Retrain without each namespace and report the value it adds, plus data warnings."""
        from cbloop_pipeline.tuning.features import evaluate_features
        from cbloop_pipeline.tuning.plot import plot_features
        from cbloop_pipeline.tuning.search import SearchOptions

        settings = catalog_settings_from(config)
        exp = settings.experiment(experiment)
        options = SearchOptions(
            estimator=estimator or exp.promotion.estimator, folds=folds, seed=seed
        )
        out.mkdir(parents=True, exist_ok=True)
        with (
            _inputs(settings, experiment) as (store, joins),
            _progress("training without each namespace") as (start, advance),
        ):
            report = evaluate_features(
                store,
                experiment,
                exp,
                joins,
                options=options,
                min_effect=min_effect,
                on_prepared=start,
                on_done=lambda _char: advance(),
            )
        _print_features(report)
        _write_csv(out / FEATURES_CSV, _feature_rows(report))
        plot_features(report, out / FEATURES_PNG)
        (out / FEATURES_JSON).write_text(json.dumps(report.to_dict(), indent=2), encoding="utf-8")
        typer.echo(
            f"results: {out / FEATURES_CSV}, {out / FEATURES_JSON}; plot: {out / FEATURES_PNG}"
        )
