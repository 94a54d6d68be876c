"""SegmentShipper against a folder store (the S3 behaviour is covered in tests/s3/)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cbloop.eventlog import SegmentWriter
from cbloop.eventlog.shipper import SegmentShipper, make_shipper
from cbloop.settings import EventLogSettings, Settings
from cbloop.storage import LocalStore, StorageError

FLUSH_S = 10.0


class BrokenStore(LocalStore):
    """A store that fails uploads while `down` is set, or for keys in `refuse`.

    It stands in for the remote side only; the shipper under test is real.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.down = threading.Event()
        self.refuse: set[str] = set()
        self.uploads = 0

    def put_file(self, key: str, path: Path) -> None:
        self.uploads += 1
        if self.down.is_set() or key in self.refuse:
            raise StorageError("store unavailable")
        super().put_file(key, path)


class ShortWriteStore(LocalStore):
    """Keeps only half of each upload, as a store losing data would."""

    def put_file(self, key: str, path: Path) -> None:
        self.put_bytes(key, path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def remote(tmp_path: Path) -> BrokenStore:
    return BrokenStore(tmp_path / "remote")


@pytest.fixture
def shipper(remote: BrokenStore, spool: Path) -> Iterator[SegmentShipper]:
    shipper = SegmentShipper(remote, spool, base_delay=0.01, max_delay=0.05)
    yield shipper
    shipper.close(timeout=1.0)


def write_segment(spool: Path, key: str, lines: int = 3) -> Path:
    path = spool / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(b'{"EventId": "e-%d"}\n' % i for i in range(lines)))
    return path


def wait_until(condition: Callable[[], bool], timeout: float = FLUSH_S) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def key_of(kind: str, name: str, date: str = "2026-11-22", hour: str = "12") -> str:
    return f"events/{kind}/date={date}/hour={hour}/{name}.jsonl"


def test_segments_closed_by_the_writer_are_uploaded_then_removed_locally(
    shipper: SegmentShipper, remote: BrokenStore, spool: Path
) -> None:
    settings = EventLogSettings(segment_max_seconds=60, fsync="never")
    writer = SegmentWriter(spool, "decisions", settings, on_closed=shipper.submit)
    shipper.start()
    writer.start()
    lines = [b'{"EventId": "e-%d"}\n' % i for i in range(50)]
    for line in lines:
        writer.append(line)
    writer.close()

    assert shipper.flush(FLUSH_S)
    shipped = remote.list("events/decisions/")
    assert len(shipped) == 1
    assert remote.get_bytes(shipped[0].key) == b"".join(lines)
    assert not (spool / shipped[0].key).exists()
    assert (shipper.shipped, shipper.pending, shipper.failed_attempts) == (1, 0, 0)
    assert shipper.bytes_shipped == len(b"".join(lines))


def test_start_ships_closed_segments_left_by_a_previous_run_but_not_open_ones(
    shipper: SegmentShipper, remote: BrokenStore, spool: Path
) -> None:
    left = [
        write_segment(spool, key_of("decisions", "w1-000001")),
        write_segment(spool, key_of("outcomes", "w1-000001")),
    ]
    still_open = spool / (key_of("decisions", "w2-000001") + ".open")
    still_open.write_bytes(b'{"EventId": "x"}\n')

    shipper.start()

    assert shipper.flush(FLUSH_S)
    assert [o.key for o in remote.list("events/")] == [
        key_of("decisions", "w1-000001"),
        key_of("outcomes", "w1-000001"),
    ]
    assert not any(p.exists() for p in left)
    assert still_open.exists()


def test_uploads_that_fail_are_retried_and_the_file_is_kept_until_they_succeed(
    shipper: SegmentShipper, remote: BrokenStore, spool: Path
) -> None:
    remote.down.set()
    key = key_of("decisions", "w1-000001")
    path = write_segment(spool, key)
    shipper.start()
    shipper.submit(path, key)

    assert not shipper.flush(0.3)
    assert shipper.failed_attempts >= 2
    assert path.exists()
    assert remote.stat(key) is None
    assert shipper.pending == 1

    remote.down.clear()
    assert shipper.flush(FLUSH_S)
    assert not path.exists()
    assert remote.stat(key) is not None
    assert shipper.shipped == 1


def test_a_segment_the_store_keeps_refusing_does_not_hold_up_the_others(
    shipper: SegmentShipper, remote: BrokenStore, spool: Path
) -> None:
    stuck = key_of("decisions", "w1-000001")
    remote.refuse.add(stuck)
    keys = [stuck] + [key_of("decisions", f"w1-{n:06d}") for n in range(2, 6)]
    for key in keys:
        write_segment(spool, key)
    shipper.start()

    assert wait_until(lambda: len(remote.list("events/")) == len(keys) - 1)
    assert (spool / stuck).exists()
    assert shipper.pending == 1

    remote.refuse.clear()
    assert shipper.flush(FLUSH_S)
    assert not (spool / stuck).exists()


def test_an_upload_the_store_does_not_hold_in_full_is_not_deleted_locally(
    tmp_path: Path, spool: Path
) -> None:
    store = ShortWriteStore(tmp_path / "remote")
    shipper = SegmentShipper(store, spool, base_delay=0.01, max_delay=0.02)
    key = key_of("outcomes", "w1-000001")
    path = write_segment(spool, key)
    shipper.start()
    try:
        assert not shipper.flush(0.2)
        assert path.exists()
        assert shipper.shipped == 0
        assert shipper.last_error is not None
        assert "expected" in shipper.last_error
    finally:
        assert not shipper.close(timeout=0.1)
    assert path.exists()


def test_submitting_the_same_segment_twice_ships_it_once(
    shipper: SegmentShipper, remote: BrokenStore, spool: Path
) -> None:
    key = key_of("decisions", "w1-000001")
    path = write_segment(spool, key)
    shipper.submit(path, key)
    shipper.submit(path, key)
    shipper.start()  # its spool scan finds the same file a third time

    assert shipper.flush(FLUSH_S)
    assert remote.uploads == 1
    assert shipper.shipped == 1


def test_a_segment_already_removed_by_a_sibling_worker_counts_as_done(
    shipper: SegmentShipper, remote: BrokenStore, spool: Path
) -> None:
    key = key_of("decisions", "w1-000001")
    shipper.start()
    shipper.submit(spool / key, key)

    assert shipper.flush(FLUSH_S)
    assert remote.uploads == 0
    assert shipper.failed_attempts == 0


def test_close_with_the_store_down_stops_in_time_and_a_later_start_ships_the_rest(
    remote: BrokenStore, spool: Path
) -> None:
    remote.down.set()
    first = SegmentShipper(remote, spool, base_delay=0.01, max_delay=0.05)
    key = key_of("decisions", "w1-000001")
    path = write_segment(spool, key)
    content = path.read_bytes()
    first.start()
    first.submit(path, key)

    assert not first.close(timeout=0.2)
    assert path.exists()

    remote.down.clear()
    second = SegmentShipper(remote, spool, base_delay=0.01, max_delay=0.05)
    second.start()
    try:
        assert second.flush(FLUSH_S)
    finally:
        assert second.close(timeout=1.0)
    assert remote.get_bytes(key) == content
    assert not path.exists()


def test_close_retries_at_once_instead_of_sitting_out_a_long_backoff(
    remote: BrokenStore, spool: Path
) -> None:
    remote.down.set()
    shipper = SegmentShipper(remote, spool, base_delay=600.0, max_delay=600.0)
    key = key_of("decisions", "w1-000001")
    path = write_segment(spool, key)
    shipper.start()
    shipper.submit(path, key)
    assert wait_until(lambda: shipper.failed_attempts == 1)  # now backing off for minutes

    remote.down.clear()
    assert shipper.close(timeout=FLUSH_S)
    assert not path.exists()
    assert remote.stat(key) is not None


def test_close_ships_what_is_queued_when_the_store_is_up(remote: BrokenStore, spool: Path) -> None:
    shipper = SegmentShipper(remote, spool)
    shipper.start()
    for n in range(1, 4):
        key = key_of("outcomes", f"w1-{n:06d}")
        shipper.submit(write_segment(spool, key), key)

    assert shipper.close(timeout=FLUSH_S)
    assert len(remote.list("events/outcomes/")) == 3


def test_emptied_partition_folders_are_pruned_only_when_old(
    shipper: SegmentShipper, spool: Path
) -> None:
    old_key = key_of("decisions", "w1-000001", date="2020-01-01", hour="00")
    write_segment(spool, old_key)
    shipper.start()
    assert shipper.flush(FLUSH_S)
    assert not (spool / "events/decisions/date=2020-01-01").exists()
    assert (spool / "events/decisions").is_dir()

    settings = EventLogSettings(fsync="never")
    writer = SegmentWriter(spool, "decisions", settings, on_closed=shipper.submit)
    writer.start()
    writer.append(b'{"EventId": "now"}\n')
    writer.close()
    assert shipper.flush(FLUSH_S)
    # The current hour's folder stays: a writer may be about to open a segment in it.
    assert list((spool / "events/decisions").glob("date=*/hour=*"))


def test_make_shipper_is_none_for_the_local_backend(settings: Settings) -> None:
    assert make_shipper(settings) is None


def test_make_shipper_targets_the_bucket_and_the_spool_for_the_s3_backend(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        storage={"backend": "s3", "s3": {"bucket": "cbloop-test", "region": "us-east-1"}}
    )
    shipper = make_shipper(settings)
    assert shipper is not None
    assert shipper.spool_root == settings.storage.root
    assert "cbloop-test" in repr(shipper.store)
