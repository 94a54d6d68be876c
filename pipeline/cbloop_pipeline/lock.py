"""One learning loop at a time: an exclusive, non-blocking `flock` on pipeline.lock_path.

The kernel drops a flock when its process dies, however it dies, so a killed loop never
leaves a stale lock behind for the next one to trip over.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cbloop.errors import TransientError

logger = logging.getLogger(__name__)


class LockHeld(TransientError):
    """Another process holds the lock."""


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold the lock for the duration of the block; raise LockHeld if someone else has it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            raise LockHeld(
                f"another learning loop holds {path}{f' (pid {holder})' if holder else ''}"
            ) from None
        # The pid is only informative (for the message above); the flock is the lock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        logger.debug("lock %s taken", path)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
