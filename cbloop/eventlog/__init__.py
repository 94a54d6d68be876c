"""The append-only event log: decisions and outcomes in closed JSON-lines segments."""

from __future__ import annotations

from pathlib import Path

from cbloop.eventlog.layout import KINDS, Kind, is_closed_segment, kind_prefix
from cbloop.eventlog.writer import ClosedCallback, EventLogError, SegmentWriter, recover_orphans
from cbloop.settings import EventLogSettings

__all__ = [
    "KINDS",
    "EventLog",
    "EventLogError",
    "Kind",
    "SegmentWriter",
    "is_closed_segment",
    "kind_prefix",
    "recover_orphans",
]


class EventLog:
    """A process's pair of writers: one for decisions, one for outcomes."""

    def __init__(
        self, root: Path, settings: EventLogSettings, *, on_closed: ClosedCallback | None = None
    ) -> None:
        self.decisions = SegmentWriter(root, "decisions", settings, on_closed=on_closed)
        self.outcomes = SegmentWriter(
            root, "outcomes", settings, writer_id=self.decisions.writer_id, on_closed=on_closed
        )

    def start(self) -> None:
        self.decisions.start()
        self.outcomes.start()

    def close(self) -> None:
        self.decisions.close()
        self.outcomes.close()

    def writable(self) -> bool:
        return self.unwritable_reason() is None

    def unwritable_reason(self) -> str | None:
        """Why either writer could not take a line now, or None."""
        return self.decisions.unwritable_reason() or self.outcomes.unwritable_reason()
