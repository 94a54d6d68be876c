"""The one clock: every timestamp cbloop writes, parses or compares goes through here.

Conventions: log lines and registry files carry ISO 8601 UTC with microseconds and a `Z`;
the warehouse stores naive UTC datetimes (DuckDB TIMESTAMP); arithmetic uses aware UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    """The current moment, aware, in UTC."""
    return datetime.now(UTC)


def utcnow_naive() -> datetime:
    """Now as a naive UTC datetime, the warehouse's convention."""
    return now().replace(tzinfo=None)


def to_naive_utc(moment: datetime) -> datetime:
    """A naive UTC datetime; naive input is taken as UTC already."""
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _aware_utc(moment: datetime | None) -> datetime:
    """Now for None; naive input is taken as UTC."""
    if moment is None:
        return now()
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def format_ts(moment: datetime | None = None, *, timespec: str = "microseconds") -> str:
    """`2026-12-02T18:01:16.123456Z`: UTC with microseconds and a Z; naive input is UTC.

    `timespec` as in `datetime.isoformat`; "auto" drops the fraction when it is zero (the
    shape of times in job records and reports).
    """
    return _aware_utc(moment).isoformat(timespec=timespec).replace("+00:00", "Z")


def compact_ts(moment: datetime | None = None) -> str:
    """`20261202T180116`: the UTC second, for ids that sort by time (m-..., ev-..., d-...)."""
    return f"{_aware_utc(moment):%Y%m%dT%H%M%S}"


def parse_ts(text: str) -> datetime:
    """ISO 8601 with `Z`, an offset, or naive (taken as UTC) -> aware UTC. ValueError if not."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def epoch_seconds(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 timestamp."""
    return parse_ts(text).timestamp()
