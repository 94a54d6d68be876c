"""Append-only segment writer: one per process and kind, the only writer of its files.

Durability contract: `append` returns only after the whole line went to the OS with
os.write, so a SIGKILL of the process afterwards cannot lose it. fsync is grouped by a
background thread (or done per line with fsync=always). That thread is also the only
place a segment's fd is closed, so an fsync can never race a close.

A segment is written as `<name>.jsonl.open` under an exclusive flock and renamed to
`<name>.jsonl` when closed; readers only look at closed names. A process that dies leaves
its `.open` file unlocked, which is how `recover_orphans` tells it from a live sibling's.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cbloop.errors import TransientError
from cbloop.eventlog.layout import OPEN_SUFFIX, Kind, kind_prefix, new_writer_id, segment_key
from cbloop.settings import EventLogSettings

logger = logging.getLogger(__name__)

ClosedCallback = Callable[[Path, str], None]
"""Called with (local path, store key) after a segment is closed and renamed."""


class EventLogError(TransientError, OSError):
    """A line could not be handed to the operating system."""


@dataclass
class _Segment:
    fd: int
    open_path: Path
    closed_path: Path
    key: str
    opened_at: float
    size: int = 0
    lines: int = 0


class SegmentWriter:
    def __init__(
        self,
        root: Path,
        kind: Kind,
        settings: EventLogSettings,
        *,
        writer_id: str | None = None,
        on_closed: ClosedCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.kind: Kind = kind
        self.settings = settings
        self.writer_id = writer_id or new_writer_id()
        self.on_closed = on_closed
        self.clock = clock
        self.lines_written = 0
        self.segments_closed = 0
        #: Why the last append failed; cleared by a later append or probe that works.
        self.last_write_error: str | None = None
        self._seq = 0
        self._lock = threading.Lock()
        self._current: _Segment | None = None
        self._closing: list[_Segment] = []
        self._dirty = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        for path, key in recover_orphans(self.root, self.kind):
            self._notify_closed(path, key)
        self._thread = threading.Thread(target=self._run, name=f"eventlog-{self.kind}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self._current is not None:
                self._closing.append(self._current)
                self._current = None
        self._finish_closing()

    def writable(self) -> bool:
        return self.unwritable_reason() is None

    def unwritable_reason(self) -> str | None:
        """Why a line could not be written now, or None if it can.

        Permission bits alone said "writable" on a full disk, so this also checks the free
        space and inodes of the segment folder and, after a write failed, probes with a
        real write: readiness must clear once the fault is gone (a probe that works), and
        must not while it lasts.
        """
        directory = self.root / kind_prefix(self.kind)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if not os.access(directory, os.W_OK):
                return f"{directory} is not writable"
            fs = os.statvfs(directory)
        except OSError as exc:
            return f"{directory}: {exc}"
        free = fs.f_bavail * fs.f_frsize
        if free < self.settings.min_free_bytes:
            return (
                f"{free} bytes free under {directory}, below eventlog.min_free_bytes="
                f"{self.settings.min_free_bytes}"
            )
        if fs.f_files > 0 and fs.f_favail == 0:
            return f"no free inodes under {directory}"
        if self.last_write_error is not None:
            try:
                _probe_write(directory)
            except OSError as exc:
                return f"last write failed ({self.last_write_error}); a probe write too: {exc}"
            self.last_write_error = None
        return None

    # -- writing ---------------------------------------------------------------------
    def append(self, line: bytes) -> None:
        """Hand one '\\n'-terminated line to the OS; raises EventLogError if it could not."""
        with self._lock:
            now = self.clock()
            seg = self._current
            if seg is not None and (
                seg.size + len(line) > self.settings.segment_max_bytes
                or now - seg.opened_at >= self.settings.segment_max_seconds
            ):
                self._closing.append(seg)
                seg = self._current = None
            if seg is None:
                try:
                    seg = self._current = self._open_segment(now)
                except EventLogError as exc:
                    self.last_write_error = str(exc)
                    raise
            try:
                _write_all(seg.fd, line)
                if self.settings.fsync == "always":
                    os.fsync(seg.fd)
            except OSError as exc:
                # The segment may now end in a partial line: retire it so that the
                # next line starts clean; recovery truncates the tail.
                self._closing.append(seg)
                self._current = None
                self.last_write_error = f"{type(exc).__name__}: {exc}"
                raise EventLogError(f"could not write {self.kind} line: {exc}") from exc
            seg.size += len(line)
            seg.lines += 1
            self.lines_written += 1
            self._dirty = True
            if self.last_write_error is not None:
                self.last_write_error = None

    def _open_segment(self, now: float) -> _Segment:
        while True:
            self._seq += 1
            key = segment_key(self.kind, now, self.writer_id, self._seq)
            closed_path = self.root / key
            open_path = closed_path.with_name(closed_path.name[: -len(".jsonl")] + OPEN_SUFFIX)
            try:
                open_path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(open_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            except OSError as exc:
                raise EventLogError(f"could not open segment {open_path}: {exc}") from exc
            if _lock_if_still_linked(fd, open_path):
                return _Segment(fd, open_path, closed_path, key, now)
            # Between our create and our lock, a sibling's recover_orphans took the empty,
            # unlocked file for a dead writer's and removes it; writing there would lose lines.
            os.close(fd)

    # -- background: grouped fsync, age rotation, closing ------------------------------
    def _run(self) -> None:
        tick = min(self.settings.fsync_interval_ms / 1000.0, 0.25)
        while not self._stop.wait(tick):
            try:
                self._tick()
            except Exception:  # the top of a thread: log it and keep ticking
                logger.exception("event log background step failed", extra={"kind": self.kind})

    def _tick(self) -> None:
        with self._lock:
            seg, dirty = self._current, self._dirty
            self._dirty = False
            if (
                seg is not None
                and self.clock() - seg.opened_at >= self.settings.segment_max_seconds
            ):
                self._closing.append(seg)
                self._current = None
        if seg is not None and dirty and self.settings.fsync == "interval":
            os.fsync(seg.fd)
        self._finish_closing()

    def _finish_closing(self) -> None:
        with self._lock:
            closing, self._closing = self._closing, []
        for seg in closing:
            # Our fd holds the lock until the rename is done, so a sibling's recover_orphans
            # cannot take (and rename) a segment we are still closing.
            try:
                if self.settings.fsync != "never":
                    os.fsync(seg.fd)
                if seg.lines == 0:
                    seg.open_path.unlink(missing_ok=True)
                    continue
                _truncate_partial_tail(seg.open_path)
                os.rename(seg.open_path, seg.closed_path)
            except OSError:
                # Left as an unlocked `.open` file, the next start's recover_orphans closes
                # it; the rest of the batch must still be closed now.
                logger.exception("could not close segment", extra={"key": seg.key})
                continue
            finally:
                os.close(seg.fd)
            self.segments_closed += 1
            logger.info(
                "segment closed",
                extra={"kind": self.kind, "key": seg.key, "lines": seg.lines, "bytes": seg.size},
            )
            self._notify_closed(seg.closed_path, seg.key)

    def _notify_closed(self, path: Path, key: str) -> None:
        if self.on_closed is None:
            return
        try:
            self.on_closed(path, key)
        except OSError:
            # Shipping failures must never break writing; the shipper retries on its own.
            logger.exception("segment close callback failed", extra={"key": key})


def _probe_write(directory: Path) -> None:
    """Create, write, sync and remove a small file: what a new segment would need."""
    fd, name = tempfile.mkstemp(prefix=".probe-", dir=directory)
    try:
        _write_all(fd, b"probe\n" * 512)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def recover_orphans(root: Path, kind: Kind) -> list[tuple[Path, str]]:
    """Close segments whose writer died: cut to the last whole line and rename.

    A segment still locked by a live process (a sibling worker) is left alone.
    """
    base = root / kind_prefix(kind)
    recovered: list[tuple[Path, str]] = []
    if not base.exists():
        return recovered
    for open_path in sorted(base.rglob(f"*{OPEN_SUFFIX}")):
        try:
            fd = os.open(open_path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            if not open_path.exists():  # closed by its owner between our listing and lock
                continue
            keep = _truncate_partial_tail(open_path)
            closed_path = open_path.with_name(open_path.name[: -len(".open")])
            if keep == 0:
                open_path.unlink()
                continue
            os.fsync(fd)
            os.rename(open_path, closed_path)
            key = closed_path.relative_to(root).as_posix()
            logger.warning("recovered orphan segment", extra={"key": key, "bytes": keep})
            recovered.append((closed_path, key))
        finally:
            os.close(fd)
    return recovered


def _truncate_partial_tail(path: Path) -> int:
    """Cut a file back to its last '\\n'; returns the size kept."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as fh:
        block = 64 * 1024
        end = size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                if keep != size:
                    fh.truncate(keep)
                return keep
            end = start
        fh.truncate(0)
        return 0


def _lock_if_still_linked(fd: int, path: Path) -> bool:
    """Take the segment's lock; False if someone else holds it or the name is gone."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        ours, named = os.fstat(fd), os.stat(path)
    except (BlockingIOError, FileNotFoundError):
        return False
    return (ours.st_dev, ours.st_ino) == (named.st_dev, named.st_ino)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
