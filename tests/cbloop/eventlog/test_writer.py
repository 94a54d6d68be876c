"""The segment writer and orphan recovery, on real files, real locks and a real SIGKILL."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from cbloop.eventlog import writer as writer_module
from cbloop.eventlog.layout import is_closed_segment, partition
from cbloop.eventlog.writer import SegmentWriter, recover_orphans
from cbloop.settings import EventLogSettings

REPO_ROOT = Path(__file__).resolve().parents[3]
T0 = 1_795_000_000.0  # a fixed "now" for the fake clock: 2026-11-19 UTC


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _settings(**overrides: object) -> EventLogSettings:
    values: dict[str, object] = {"fsync": "never", "fsync_interval_ms": 10}
    values.update(overrides)
    return EventLogSettings.model_validate(values)


def _line(n: int, pad: int = 0) -> bytes:
    return orjson.dumps({"EventId": f"e-{n}", "pad": "x" * pad}) + b"\n"


def _closed(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl"))


def _open(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jsonl.open"))


def _ids(paths: list[Path]) -> list[str]:
    return [orjson.loads(line)["EventId"] for p in paths for line in p.read_bytes().splitlines()]


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def _orphan(root: Path, name: str, content: bytes) -> Path:
    directory = root / "events" / "decisions" / partition(T0)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.jsonl.open"
    path.write_bytes(content)
    return path


# ---------------------------------------------------------------------- open -> closed


def test_lines_go_to_an_open_segment_then_a_closed_one_on_close(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "decisions", _settings(), writer_id="w1", clock=FakeClock())
    writer.append(_line(1))
    writer.append(_line(2))
    [open_path] = _open(tmp_path)
    assert open_path == tmp_path / "events/decisions" / partition(T0) / "w1-000001.jsonl.open"
    assert open_path.read_bytes() == _line(1) + _line(2)  # handed to the OS before close
    assert _closed(tmp_path) == []

    writer.close()
    assert _open(tmp_path) == []
    [closed] = _closed(tmp_path)
    assert closed == open_path.with_name("w1-000001.jsonl")
    assert closed.read_bytes() == _line(1) + _line(2)
    assert is_closed_segment(closed.relative_to(tmp_path).as_posix())
    assert writer.lines_written == 2
    assert writer.segments_closed == 1


def test_close_without_lines_leaves_no_file(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "outcomes", _settings())
    writer.start()
    writer.close()
    assert list(tmp_path.rglob("*.jsonl*")) == []


def test_partition_follows_the_time_the_segment_was_opened(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    settings = _settings(segment_max_seconds=7200)
    writer = SegmentWriter(tmp_path, "outcomes", settings, writer_id="w", clock=clock)
    writer.append(_line(1))
    clock.now = T0 + 3600  # next hour, but not old enough to rotate
    writer.append(_line(2))
    writer.close()
    [closed] = _closed(tmp_path)
    assert closed.parent == tmp_path / "events/outcomes" / partition(T0)


def test_on_closed_gets_the_path_and_the_store_key(tmp_path: Path) -> None:
    seen: list[tuple[Path, str]] = []
    writer = SegmentWriter(
        tmp_path, "decisions", _settings(), on_closed=lambda p, k: seen.append((p, k))
    )
    writer.append(_line(1))
    writer.close()
    [closed] = _closed(tmp_path)
    assert seen == [(closed, closed.relative_to(tmp_path).as_posix())]


def test_failing_on_closed_callback_does_not_break_closing(tmp_path: Path) -> None:
    def refuse(path: Path, key: str) -> None:
        raise OSError("shipping is down")

    writer = SegmentWriter(tmp_path, "decisions", _settings(), on_closed=refuse)
    writer.append(_line(1))
    writer.close()
    assert len(_closed(tmp_path)) == 1


# ------------------------------------------------------------------------------ rotation


def test_segments_rotate_by_size_and_keep_every_line_in_order(tmp_path: Path) -> None:
    writer = SegmentWriter(
        tmp_path, "decisions", _settings(segment_max_bytes=2048), writer_id="w", clock=FakeClock()
    )
    for n in range(60):
        writer.append(_line(n, pad=70))
    writer.close()
    segments = _closed(tmp_path)
    assert len(segments) >= 3
    assert all(p.stat().st_size <= 2048 for p in segments)
    assert [p.name for p in segments] == [f"w-{i:06d}.jsonl" for i in range(1, len(segments) + 1)]
    assert _ids(segments) == [f"e-{n}" for n in range(60)]


def test_a_line_larger_than_the_size_limit_gets_a_segment_of_its_own(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "decisions", _settings(segment_max_bytes=2048))
    writer.append(_line(1))
    writer.append(_line(2, pad=4000))
    writer.append(_line(3))
    writer.close()
    assert [_ids([p]) for p in _closed(tmp_path)] == [["e-1"], ["e-2"], ["e-3"]]


def test_segments_rotate_by_age_on_the_next_append(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = SegmentWriter(
        tmp_path, "decisions", _settings(segment_max_seconds=60), writer_id="w", clock=clock
    )
    writer.append(_line(1))
    clock.now += 59
    writer.append(_line(2))
    clock.now += 1  # 60 s after opening: this line starts a new segment
    writer.append(_line(3))
    writer.close()
    segments = _closed(tmp_path)
    assert [_ids([p]) for p in segments] == [["e-1", "e-2"], ["e-3"]]


def test_an_idle_segment_is_closed_by_age_without_another_append(tmp_path: Path) -> None:
    clock = FakeClock()
    writer = SegmentWriter(tmp_path, "decisions", _settings(segment_max_seconds=60), clock=clock)
    writer.start()
    try:
        writer.append(_line(1))
        clock.now += 61
        _wait_for(lambda: len(_closed(tmp_path)) == 1)
        assert _open(tmp_path) == []
        assert _ids(_closed(tmp_path)) == ["e-1"]
    finally:
        writer.close()


# ------------------------------------------------------------------------------- fsync


@pytest.fixture
def fsync_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the fds passed to os.fsync (still fsyncing them)."""
    calls: list[int] = []
    real = os.fsync

    def recording(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", recording)
    return calls


def test_fsync_always_syncs_each_line_before_append_returns(
    tmp_path: Path, fsync_calls: list[int]
) -> None:
    writer = SegmentWriter(tmp_path, "decisions", _settings(fsync="always"))
    for n in range(5):
        writer.append(_line(n))
        assert len(fsync_calls) == n + 1
    writer.close()


def test_fsync_interval_does_not_sync_per_line_but_syncs_in_the_background(
    tmp_path: Path, fsync_calls: list[int]
) -> None:
    writer = SegmentWriter(tmp_path, "decisions", _settings(fsync="interval"))
    for n in range(20):
        writer.append(_line(n))
    assert fsync_calls == []  # not started: no background thread yet
    writer.start()
    try:
        _wait_for(lambda: len(fsync_calls) >= 1)
        assert _open(tmp_path) != []  # synced while the segment is still open
    finally:
        writer.close()
    assert _ids(_closed(tmp_path)) == [f"e-{n}" for n in range(20)]


def test_fsync_never_does_not_sync_even_on_close(tmp_path: Path, fsync_calls: list[int]) -> None:
    writer = SegmentWriter(tmp_path, "decisions", _settings(fsync="never"))
    writer.start()
    for n in range(20):
        writer.append(_line(n))
    writer.close()
    assert fsync_calls == []
    assert len(_ids(_closed(tmp_path))) == 20


# ------------------------------------------------------------------------- orphans


def test_orphan_of_a_dead_writer_is_cut_to_its_last_whole_line_and_closed(tmp_path: Path) -> None:
    whole = _line(1) + _line(2)
    path = _orphan(tmp_path, "dead-000003", whole + b'{"EventId": "e-3", "pa')
    recovered = recover_orphans(tmp_path, "decisions")
    closed = path.with_name("dead-000003.jsonl")
    assert recovered == [(closed, closed.relative_to(tmp_path).as_posix())]
    assert not path.exists()
    assert closed.read_bytes() == whole


def test_orphan_ending_in_a_whole_line_is_closed_unchanged(tmp_path: Path) -> None:
    path = _orphan(tmp_path, "dead-000001", _line(1))
    [(closed, _)] = recover_orphans(tmp_path, "decisions")
    assert closed.read_bytes() == _line(1)
    assert not path.exists()


@pytest.mark.parametrize("content", [b"", b'{"EventId": "e-1", "no newline'])
def test_orphan_without_a_whole_line_is_removed(tmp_path: Path, content: bytes) -> None:
    path = _orphan(tmp_path, "dead-000001", content)
    assert recover_orphans(tmp_path, "decisions") == []
    assert not path.exists()
    assert _closed(tmp_path) == []


def test_partial_tail_far_back_in_a_large_orphan_is_found(tmp_path: Path) -> None:
    # The last newline sits more than one 64 KiB read block before the end.
    head = _line(1)
    path = _orphan(tmp_path, "dead-000001", head + b"y" * (200 * 1024))
    [(closed, _)] = recover_orphans(tmp_path, "decisions")
    assert closed.read_bytes() == head
    assert not path.exists()


def test_recovery_with_no_event_folder_is_a_no_op(tmp_path: Path) -> None:
    assert recover_orphans(tmp_path, "outcomes") == []


def test_recovery_only_looks_at_its_own_kind(tmp_path: Path) -> None:
    path = _orphan(tmp_path, "dead-000001", _line(1))
    assert recover_orphans(tmp_path, "outcomes") == []
    assert path.exists()


def test_flock_of_a_second_open_file_in_the_same_process_conflicts(tmp_path: Path) -> None:
    # What recover_orphans relies on to see a sibling (or itself) as live.
    path = tmp_path / "f"
    path.write_bytes(b"")
    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        fcntl.flock(first, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError):
            fcntl.flock(second, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(first)
        os.close(second)


def test_segment_of_a_live_writer_is_not_touched_by_recovery(tmp_path: Path) -> None:
    writer = SegmentWriter(tmp_path, "decisions", _settings())
    writer.append(_line(1))
    [open_path] = _open(tmp_path)
    before = open_path.read_bytes()

    assert recover_orphans(tmp_path, "decisions") == []
    assert _open(tmp_path) == [open_path]
    assert open_path.read_bytes() == before

    writer.append(_line(2))  # still the same segment, still writable
    writer.close()
    assert _ids(_closed(tmp_path)) == ["e-1", "e-2"]


def test_start_recovers_orphans_and_reports_them_but_spares_a_live_sibling(
    tmp_path: Path,
) -> None:
    sibling = SegmentWriter(tmp_path, "decisions", _settings(), writer_id="sibling")
    sibling.append(_line(1))
    _orphan(tmp_path, "dead-000001", _line(2) + b"{partial")
    seen: list[str] = []
    writer = SegmentWriter(
        tmp_path, "decisions", _settings(), writer_id="new", on_closed=lambda p, k: seen.append(k)
    )
    writer.start()
    try:
        assert [Path(k).name for k in seen] == ["dead-000001.jsonl"]
        assert [p.name for p in _open(tmp_path)] == ["sibling-000001.jsonl.open"]
    finally:
        writer.close()
        sibling.close()
    assert sorted(_ids(_closed(tmp_path))) == ["e-1", "e-2"]


def test_new_segment_taken_by_a_sibling_recovery_before_its_lock_is_not_written_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The instant between creating a segment and locking it: a sibling process starting up
    # sees an empty unlocked .open file, takes it for a dead writer's and deletes it.
    real_flock = fcntl.flock
    raced: list[list[tuple[Path, str]]] = []

    def flock_after_sibling_recovery(fd: int, operation: int) -> None:
        if not raced:
            raced.append([])
            raced[0] = recover_orphans(tmp_path, "decisions")
        real_flock(fd, operation)

    writer = SegmentWriter(tmp_path, "decisions", _settings(), writer_id="w")
    monkeypatch.setattr(fcntl, "flock", flock_after_sibling_recovery)
    writer.append(_line(1))
    monkeypatch.undo()
    writer.append(_line(2))
    writer.close()

    assert raced == [[]]  # the sibling did remove the empty first segment
    assert _open(tmp_path) == []
    assert _ids(_closed(tmp_path)) == ["e-1", "e-2"]


def test_new_segment_locked_by_a_sibling_recovery_is_left_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_flock = fcntl.flock
    held: list[int] = []

    def flock_while_sibling_holds_it(fd: int, operation: int) -> None:
        if not held:
            [path] = _open(tmp_path)
            held.append(os.open(path, os.O_RDWR))
            real_flock(held[0], fcntl.LOCK_EX | fcntl.LOCK_NB)
        real_flock(fd, operation)

    writer = SegmentWriter(tmp_path, "decisions", _settings(), writer_id="w")
    monkeypatch.setattr(fcntl, "flock", flock_while_sibling_holds_it)
    try:
        writer.append(_line(1))
    finally:
        monkeypatch.undo()
        os.close(held[0])
    writer.close()
    recover_orphans(tmp_path, "decisions")  # the sibling's cleanup of the empty file
    assert _open(tmp_path) == []
    assert _ids(_closed(tmp_path)) == ["e-1"]


def test_segment_being_closed_by_its_owner_is_not_taken_by_a_sibling_recovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The owner is between "done writing" and "renamed" when a sibling starts up.
    real_truncate = writer_module._truncate_partial_tail
    sibling_saw: list[list[tuple[Path, str]]] = []

    def truncate_after_sibling_recovery(path: Path) -> int:
        if not sibling_saw:
            sibling_saw.append([])
            sibling_saw[0] = recover_orphans(tmp_path, "decisions")
        return real_truncate(path)

    seen: list[str] = []
    writer = SegmentWriter(
        tmp_path, "decisions", _settings(), on_closed=lambda p, k: seen.append(k)
    )
    writer.append(_line(1))
    monkeypatch.setattr(writer_module, "_truncate_partial_tail", truncate_after_sibling_recovery)
    writer.close()

    assert sibling_saw == [[]]
    [closed] = _closed(tmp_path)
    assert seen == [closed.relative_to(tmp_path).as_posix()]
    assert _ids([closed]) == ["e-1"]
    assert writer.segments_closed == 1


# ------------------------------------------------------------------------------ SIGKILL

_CHILD = """
import sys
from pathlib import Path
from cbloop.eventlog.writer import SegmentWriter
from cbloop.settings import EventLogSettings

settings = EventLogSettings(segment_max_bytes=4096, fsync="never", fsync_interval_ms=5)
writer = SegmentWriter(Path(sys.argv[1]), "decisions", settings, writer_id="victim")
writer.start()
n = 0
while True:
    writer.append(b'{"EventId": "e-%d", "pad": "%s"}\\n' % (n, b"z" * (n % 97)))
    sys.stdout.write(f"{n}\\n")
    sys.stdout.flush()
    n += 1
"""


@pytest.mark.timeout(60)
def test_sigkilled_writer_loses_no_acknowledged_line_and_duplicates_none(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(tmp_path)],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    assert child.stdout is not None
    acked: list[str] = []
    try:
        while len(acked) < 3000:
            line = child.stdout.readline()
            assert line, "writer process exited early"
            acked.append(f"e-{int(line)}")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    # Acks already in the pipe were also sent after their append returned.
    acked += [f"e-{int(n)}" for n in child.stdout.read().split()]
    child.stdout.close()
    assert _open(tmp_path) != []  # killed with a segment open

    recovered = recover_orphans(tmp_path, "decisions")
    assert recovered
    assert _open(tmp_path) == []
    ids = _ids(_closed(tmp_path))
    assert len(ids) == len(set(ids))
    assert set(acked) <= set(ids)
    # Nothing but whole lines, numbered without gaps: at most one unacknowledged line more.
    assert len(ids) - len(acked) in (0, 1)
    assert sorted(int(i[2:]) for i in ids) == list(range(len(ids)))
