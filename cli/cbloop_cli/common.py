"""What every subcommand shares: --config, settings loading and error reporting."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cbloop.logs import configure_logging
from cbloop.settings import Settings, load_settings

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
    """Load settings for a command (a bad configuration ends it through cbloop_cli.errors)."""
    settings = load_settings(config)
    configure_logging(settings.logging)
    return settings
