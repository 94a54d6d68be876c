"""What every subcommand shares: --config, settings loading and error reporting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from cbloop.logs import configure_logging
from cbloop.settings import Settings, SettingsError, load_settings

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="Settings file (default: ./config.yaml, or $CBLOOP_CONFIG). "
        "CBLOOP_<SECTION>__<KEY> environment variables override it.",
        dir_okay=False,
    ),
]


def settings_from(config: Path | None) -> Settings:
    """Load settings for a command, turning a bad configuration into a clean CLI error."""
    try:
        settings = load_settings(config)
    except SettingsError as exc:
        fail(str(exc))
    configure_logging(settings.logging)
    return settings


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)
