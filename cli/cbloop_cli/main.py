"""Entry point: one `cbloop` command, one subcommand per job."""

from __future__ import annotations

import typer

from cbloop_cli import (
    bench,
    dashboard,
    decide,
    experiments,
    learning,
    personalizer_evaluations,
    personalizer_import,
    retention,
    serve,
    simulate,
    tuning,
    warehouse,
)
from cbloop_cli.errors import CbloopGroup

app = typer.Typer(
    name="cbloop",
    cls=CbloopGroup,
    help="Contextual-bandit personalization: serve, log, join, train, evaluate, deploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (
    serve,
    warehouse,
    learning,
    experiments,
    personalizer_import,
    personalizer_evaluations,
    retention,
    decide,
    simulate,
    bench,
    dashboard,
    tuning,
):
    module.register(app)


def main() -> None:
    app()
