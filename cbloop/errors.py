"""The one error family. Every error cbloop raises on purpose is a `CbloopError`.

Each edge (HTTP handlers, the CLI, the top of every long-lived thread and loop) translates these
in one place; code in between raises the most specific class and never prints. The categories
below tell an edge what to do without knowing every class:

- `ConfigError`: the settings or the command line are wrong; retrying cannot help (CLI exit 2).
- `InvalidInput`: a request, a file or a line breaks the contract; refuse it, name the problem.
- `TransientError`: the world is briefly in the way (store unreachable, warehouse busy); a
  daemon backs off and retries.
"""

from __future__ import annotations


class CbloopError(Exception):
    """Base of every error cbloop raises on purpose. `hint` says what to do about it."""

    hint: str = ""

    def __init__(self, *args: object, hint: str | None = None) -> None:
        # Positional arguments pass through unchanged: some subclasses also derive from
        # OSError or KeyError, whose constructors and str() depend on them.
        super().__init__(*args)
        if hint is not None:
            self.hint = hint


class ConfigError(CbloopError):
    """Bad settings or bad usage: fix the configuration or the command, then run again."""


class InvalidInput(CbloopError):
    """Input that breaks a contract (a request body, a file, a logged line)."""


class TransientError(CbloopError):
    """A failure that may pass by itself; long-lived loops retry these with backoff."""
