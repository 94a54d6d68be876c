"""`cbloop bench`: every benchmark, each printing its ratio against the baseline it measured."""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from cbloop_cli.common import ConfigOption, settings_from
from cbloop_cli.errors import fail

logger = logging.getLogger(__name__)

#: name -> module under cbloop_cli.benchmarks exposing run(out_dir: Path, quick: bool) -> dict
BENCHES = ("serve", "join", "train", "decide", "dashboard", "evaluate")


def register(app: typer.Typer) -> None:
    @app.command()
    def bench(
        only: Annotated[
            list[str] | None, typer.Option("--only", help=f"Run only these: {', '.join(BENCHES)}")
        ] = None,
        out: Annotated[Path, typer.Option("--out", help="Folder for data and results")] = Path(
            "bench-out"
        ),
        quick: Annotated[
            bool, typer.Option("--quick", help="Smaller sizes, for a smoke run")
        ] = False,
        config: ConfigOption = None,
    ) -> None:
        """Measure serving, joining and training against same-run baselines."""
        settings_from(config)  # validates the config and sets up logging
        chosen = only or list(BENCHES)
        unknown = sorted(set(chosen) - set(BENCHES))
        if unknown:
            fail(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
        results: dict[str, Any] = {}
        for name in chosen:
            module = importlib.import_module(f"cbloop_cli.benchmarks.{name}")
            typer.secho(f"== bench {name}", bold=True)
            results[name] = module.run(out / name, quick=quick)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
        typer.echo(f"results written to {out / 'results.json'}")
