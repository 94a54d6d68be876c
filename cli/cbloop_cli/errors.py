"""The CLI's one translation of errors: a line on stderr and an exit code, never a traceback.

Every subcommand runs inside `CbloopGroup.invoke`, so a `CbloopError` raised anywhere below a
command ends as `error: <what>; <hint>` and exit status 2 (the command or its input must
change: `ConfigError`, `InvalidInput`) or 1 (something failed; running again may help). Any
other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from cbloop.errors import CbloopError, ConfigError, InvalidInput

#: Exit status of a command the user must change (bad usage, bad settings, bad input).
USAGE_EXIT = 2
#: Exit status of a failure that is not the command's fault (store down, warehouse busy).
FAILURE_EXIT = 1


def exit_code(exc: CbloopError) -> int:
    return USAGE_EXIT if isinstance(exc, ConfigError | InvalidInput) else FAILURE_EXIT


def describe(exc: CbloopError) -> str:
    """`<what>; <hint>`: the message, then what to do about it when the error knows."""
    what = str(exc) or type(exc).__name__
    return f"{what}; {exc.hint}" if exc.hint else what


def fail(message: str, code: int = USAGE_EXIT) -> NoReturn:
    """End the command with one line on stderr; for checks the CLI itself makes."""
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


class CbloopGroup(TyperGroup):
    """The `cbloop` command group; the one place a CLI command's errors are translated."""

    # Typer passes its own (vendored) click context; its class is not public API.
    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except CbloopError as exc:
            fail(describe(exc), exit_code(exc))
