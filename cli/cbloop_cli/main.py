"""Entry point: one `cbloop` command, one subcommand per job."""

from __future__ import annotations

import typer

from cbloop_cli import bench, dashboard, learning, serve, simulate, warehouse

app = typer.Typer(
    name="cbloop",
    help="Contextual-bandit personalization: serve, log, join, train, evaluate, deploy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for module in (serve, warehouse, learning, simulate, bench, dashboard):
    module.register(app)


def main() -> None:
    app()
