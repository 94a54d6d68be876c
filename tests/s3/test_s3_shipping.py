"""Closed segments go from the local spool to S3: normal shipping, an outage, a restart.

A crash between upload and local delete is covered with ingest in test_s3_pipeline.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cbloop.eventlog import EventLog, SegmentWriter
from cbloop.eventlog.shipper import SegmentShipper, make_shipper
from cbloop.storage.s3 import S3Store

from .conftest import MotoS3, S3SettingsFactory

FLUSH_S = 30.0


def decision_line(n: int) -> bytes:
    return b'{"EventId": "e-%d", "a": [1], "p": [1.0]}\n' % n


def spooled(root: Path) -> list[Path]:
    """Closed segments still waiting in the spool."""
    return sorted((root / "events").rglob("*.jsonl"))


def remote_lines(store: S3Store) -> list[bytes]:
    lines: list[bytes] = []
    for info in store.list("events/"):
        lines.extend(store.get_bytes(info.key).splitlines(keepends=True))
    return lines


def wait_until(condition: Callable[[], bool], timeout: float = FLUSH_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_segments_ship_to_the_bucket_in_the_partitioned_layout(
    make_s3_settings: S3SettingsFactory,
) -> None:
    settings = make_s3_settings()
    shipper = make_shipper(settings)
    assert shipper is not None
    log = EventLog(settings.storage.root, settings.eventlog, on_closed=shipper.submit)
    shipper.start()
    log.start()
    for n in range(10):
        log.decisions.append(decision_line(n))
    log.outcomes.append(b'{"EventId": "e-1", "kind": "reward", "value": 1.0}\n')
    log.close()
    try:
        assert shipper.flush(FLUSH_S)
    finally:
        shipper.close()

    store = S3Store.from_settings(settings.storage.s3)
    keys = [info.key for info in store.list("events/")]
    assert len(keys) == 2
    decisions = next(k for k in keys if k.startswith("events/decisions/date="))
    assert "/hour=" in decisions
    assert decisions.endswith(f"{log.decisions.writer_id}-000001.jsonl")
    assert store.get_bytes(decisions) == b"".join(decision_line(n) for n in range(10))
    raw = store.client.list_objects_v2(Bucket=store.bucket)
    assert all(o["Key"].startswith("deploy/events/") for o in raw["Contents"])
    assert spooled(settings.storage.root) == []


def test_segments_wait_in_the_spool_during_an_outage_and_ship_when_s3_returns(
    make_s3_settings: S3SettingsFactory, outage_server: MotoS3
) -> None:
    settings = make_s3_settings(server=outage_server)
    root = settings.storage.root
    store = S3Store.from_settings(settings.storage.s3)
    shipper = SegmentShipper(store, root, base_delay=0.05, max_delay=0.5)
    now = [time.time()]
    writer = SegmentWriter(
        root, "decisions", settings.eventlog, on_closed=shipper.submit, clock=lambda: now[0]
    )
    shipper.start()
    writer.start()
    written: list[bytes] = []

    def write_segment(count: int) -> None:
        for _ in range(count):
            line = decision_line(len(written))
            writer.append(line)
            written.append(line)
        # Age the segment past segment_max_seconds: the next append (or tick) closes it.
        now[0] += settings.eventlog.segment_max_seconds + 1

    try:
        write_segment(5)
        write_segment(5)
        assert wait_until(lambda: shipper.shipped >= 1)

        outage_server.stop()
        for _ in range(3):
            write_segment(7)  # appends keep succeeding with S3 gone
        assert wait_until(lambda: shipper.failed_attempts >= 2)
        assert wait_until(lambda: len(spooled(root)) >= 3)

        outage_server.start()
        writer.close()
        assert shipper.flush(FLUSH_S)
    finally:
        shipper.close()
        writer.close()

    assert shipper.shipped == 5
    assert sorted(remote_lines(store)) == sorted(written)
    assert spooled(root) == []


def test_a_restart_ships_what_an_outage_left_behind(
    make_s3_settings: S3SettingsFactory, outage_server: MotoS3
) -> None:
    settings = make_s3_settings(server=outage_server)
    root = settings.storage.root
    outage_server.stop()
    first = make_shipper(settings)
    assert first is not None
    log = EventLog(root, settings.eventlog, on_closed=first.submit)
    first.start()
    log.start()
    lines = [decision_line(n) for n in range(12)]
    for line in lines:
        log.decisions.append(line)
    log.close()
    assert not first.close(timeout=0.5)  # S3 is down: the segment stays
    assert len(spooled(root)) == 1

    outage_server.start()
    second = make_shipper(settings)
    assert second is not None
    second.start()
    try:
        assert second.flush(FLUSH_S)
    finally:
        second.close()

    assert remote_lines(S3Store.from_settings(settings.storage.s3)) == lines
    assert spooled(root) == []
