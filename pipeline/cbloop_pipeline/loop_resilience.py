"""How the learning daemon lives through failures: which ones end it, and how long it waits.

A daemon exits only when retrying cannot help: bad settings (`ConfigError`, `SettingsError`)
or a damaged warehouse file, which needs an operator (restore it or rebuild it from the event
log). Everything else - a busy warehouse, an unreachable store, a step that failed on odd data
- is recorded and retried after a delay that doubles with each consecutive failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cbloop.errors import ConfigError
from cbloop.settings import SettingsError
from cbloop_pipeline.warehouse import WarehouseError, is_corruption

#: The longest wait between two attempts, however long the failures last; at least `every`.
MAX_BACKOFF_SECONDS = 60.0


def _causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    return chain


def is_fatal(exc: BaseException) -> bool:
    """Whether the daemon must stop on `exc` (or the error that caused it)."""
    return any(isinstance(e, ConfigError | SettingsError) or is_corruption(e) for e in _causes(exc))


def corruption_cause(exc: BaseException) -> BaseException | None:
    """The DuckDB error behind `exc` that says the warehouse file is damaged, if any."""
    return next((e for e in _causes(exc) if is_corruption(e)), None)


class Backoff:
    """Delays of `every`, 2x, 4x ... after consecutive failures, capped at
    max(every, MAX_BACKOFF_SECONDS); `reset` after a success."""

    def __init__(self, every: float, cap: float = MAX_BACKOFF_SECONDS) -> None:
        self.base = max(every, 0.1)
        self.cap = max(every, cap)
        self.failures = 0

    @property
    def current(self) -> float:
        if self.failures == 0:
            return self.base
        return min(self.base * 2.0 ** (self.failures - 1), self.cap)

    def next_delay(self) -> float:
        self.failures += 1
        return self.current

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class Outage:
    """A failure the loop could not record when it happened (the warehouse was unusable)."""

    experiment: str
    stage: str
    detail: str
    at: datetime

    @classmethod
    def of(cls, experiment: str, exc: BaseException, *, started_at: datetime) -> Outage:
        stage = "connect" if isinstance(exc, WarehouseError) else "start"
        return cls(experiment, stage, str(exc) or type(exc).__name__, started_at)
