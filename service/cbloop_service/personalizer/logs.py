"""Personalizer's log properties from the event log's folder listing.

`dateRange` is the span of the decision segments' partitions
(`events/decisions/date=YYYY-MM-DD/hour=HH/`): `from` is the start of the earliest hour
holding a decision segment, `to` the end of the latest one (not later than now). It is read
from the listing alone (no segment is opened), so it is exact to the hour, and it covers
every experiment (segments are shared; each line names its experiment). Segments retention
has deleted are not in it.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from cbloop.eventlog.layout import kind_prefix
from cbloop.storage import ObjectStore

_PARTITION = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/")


def decision_hours(store: ObjectStore) -> list[datetime]:
    """The start of every hour holding a decision segment, sorted."""
    base = kind_prefix("decisions")
    hours = set()
    for info in store.list(base):
        match = _PARTITION.match(info.key[len(base) :])
        if match:
            day, hour = match.groups()
            hours.add(datetime.fromisoformat(f"{day}T{hour}:00:00+00:00"))
    return sorted(hours)


def date_range(store: ObjectStore, now: datetime | None = None) -> tuple[datetime, datetime] | None:
    hours = decision_hours(store)
    if not hours:
        return None
    now = now or datetime.now(UTC)
    return hours[0], min(hours[-1] + timedelta(hours=1), max(now, hours[-1]))
