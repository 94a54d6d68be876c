"""Placeholder: filled in by the owner of this area."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    del app
