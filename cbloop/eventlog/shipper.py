"""Ship closed event-log segments from the local spool to the object store (S3).

The writer hands each closed segment to `SegmentShipper.submit` from its own background
thread; `submit` only records it, so a slow or unreachable store can never hold up, let
alone fail, a rank request. A single shipper thread uploads segments oldest first, checks
that the store holds the whole file, and only then deletes the local copy.

Failure model:
- Store down or slow: the upload fails (after botocore's short timeouts), the segment stays
  on disk and in the queue, and the thread waits with capped, jittered exponential backoff
  before the next try. Any success resets the backoff.
- Crash (or SIGKILL) between upload and local delete: the segment is still in the spool;
  `start` of the next process finds it and uploads it again under the same key. That is an
  idempotent overwrite with identical bytes, and ingest keys segments by their object key,
  so nothing is lost and nothing is counted twice.
- Several worker processes share one spool: each may pick up the same leftover segment at
  start. Both uploads write the same key and bytes; whoever deletes second finds nothing.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path

from cbloop.eventlog.layout import KINDS, is_closed_segment, kind_prefix
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop.storage.base import ObjectStore, StorageError

logger = logging.getLogger(__name__)

#: Partition folders younger than this may still receive new segments from a live writer.
_KEEP_PARTITION_SECONDS = 2 * 3600.0


class SegmentShipper:
    """Upload closed segments in the background; counters are read by the service's metrics."""

    def __init__(
        self,
        store: ObjectStore,
        spool_root: Path,
        *,
        base_delay: float = 0.5,
        max_delay: float = 30.0,
    ) -> None:
        self.store = store
        self.spool_root = spool_root
        self.base_delay = base_delay
        self.max_delay = max_delay
        #: Segments uploaded, verified and removed locally by this shipper.
        self.shipped = 0
        self.bytes_shipped = 0
        #: Upload attempts that failed (each retry counts).
        self.failed_attempts = 0
        self.last_error: str | None = None
        # key -> local path, oldest first; a key appears once however often it is submitted.
        self._queue: OrderedDict[str, Path] = OrderedDict()
        self._in_flight: str | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._deadline: float | None = None
        self._retry_now = False
        self._thread: threading.Thread | None = None
        self._rng = random.Random()

    # -- public ----------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Segments waiting to ship, including the one being uploaded."""
        with self._cond:
            return len(self._queue) + (1 if self._in_flight is not None else 0)

    def submit(self, path: Path, key: str) -> None:
        """Queue a closed segment. Never blocks on the store and never raises."""
        with self._cond:
            if key != self._in_flight and key not in self._queue:
                self._queue[key] = path
                self._cond.notify_all()

    def start(self) -> None:
        """Queue what a previous run left in the spool, then start shipping."""
        if self._thread is not None:
            return
        leftovers = self.scan_spool()
        if leftovers:
            logger.info("shipping leftover segments", extra={"segments": len(leftovers)})
        for path, key in leftovers:
            self.submit(path, key)
        self._thread = threading.Thread(target=self._run, name="segment-shipper", daemon=True)
        self._thread.start()

    def scan_spool(self) -> list[tuple[Path, str]]:
        """Closed segments sitting in the spool, oldest partition first."""
        found: list[tuple[Path, str]] = []
        for kind in KINDS:
            base = self.spool_root / kind_prefix(kind)
            if not base.is_dir():
                continue
            for path in sorted(base.rglob("*.jsonl")):
                key = path.relative_to(self.spool_root).as_posix()
                if is_closed_segment(key) and path.is_file():
                    found.append((path, key))
        return found

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far has shipped; False if time ran out."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float = 5.0) -> bool:
        """Try to ship what is queued within `timeout`, then stop.

        Whatever is left stays in the spool for the next start. Returns True when the queue
        was empty at the end.
        """
        with self._cond:
            self._stopping = True
            self._retry_now = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            # An upload under way may outlast the deadline by up to its network timeout. It
            # is not waited for: an interrupted upload leaves the file in the spool, and the
            # next start ships it again.
            thread.join(timeout + 1.0)
            if thread.is_alive():
                logger.warning("segment shipper did not stop in time")
        left = self.pending
        if left:
            logger.warning("segments left in the spool", extra={"segments": left})
        return left == 0

    # -- background ------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue or self._past_deadline():
                    return
                key, path = self._queue.popitem(last=False)
                self._in_flight = key
            try:
                ok = self._ship(path, key)
            except Exception:  # the top of a thread: log it, retry later
                logger.exception("segment shipping failed", extra={"key": key})
                ok = False
            with self._cond:
                self._in_flight = None
                if not ok:
                    # To the back of the line: one unshippable file must not starve the rest.
                    self._queue.setdefault(key, path)
                self._cond.notify_all()
            if ok:
                failures = 0
                continue
            failures += 1
            delay = self._backoff(failures)
            logger.warning(
                "segment upload failed; retrying",
                extra={"key": key, "retry_in_s": round(delay, 2), "error": self.last_error},
            )
            self._pause(delay)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _pause(self, delay: float) -> None:
        """Back off for `delay`, but never past close()'s deadline.

        close() also cuts a pause short once: the store may be back, and this is the last
        chance to ship before the process exits. New submissions do not: the store that
        just failed is most likely still down.
        """
        end = time.monotonic() + delay
        with self._cond:
            while True:
                if self._retry_now:
                    self._retry_now = False
                    return
                limit = end if self._deadline is None else min(end, self._deadline)
                remaining = limit - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _backoff(self, failures: int) -> float:
        delay = min(self.max_delay, self.base_delay * 2.0 ** min(failures - 1, 30))
        # Jitter so that many replicas coming back together do not retry in lockstep.
        return delay * self._rng.uniform(0.5, 1.0)

    def _ship(self, path: Path, key: str) -> bool:
        """Upload, verify, delete. True when the segment is done (or was already gone)."""
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            # A sibling worker shipped it first (both found it in the spool at start).
            logger.info("segment already gone from the spool", extra={"key": key})
            return True
        except OSError as exc:
            return self._failed(key, exc)
        try:
            self.store.put_file(key, path)
            info = self.store.stat(key)
        except (StorageError, OSError) as exc:
            if not path.exists():
                # The store could not read it because a sibling shipped and removed it first.
                logger.info("segment already gone from the spool", extra={"key": key})
                return True
            return self._failed(key, exc)
        if info is None or info.size != size:
            got = "nothing" if info is None else f"{info.size} bytes"
            return self._failed(key, StorageError(f"store holds {got}, expected {size} bytes"))
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            # Shipped but not removed: the next start uploads it again, harmlessly.
            logger.warning("could not remove shipped segment", extra={"key": key, "error": exc})
        self.shipped += 1
        self.bytes_shipped += size
        logger.info("segment shipped", extra={"key": key, "bytes": size})
        self._prune_partition(path.parent)
        return True

    def _failed(self, key: str, exc: Exception) -> bool:
        self.failed_attempts += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        logger.debug("segment upload attempt failed", extra={"key": key, "error": self.last_error})
        return False

    def _prune_partition(self, hour_dir: Path) -> None:
        """Remove emptied date=/hour= folders, but only old ones.

        A writer creates the current hour's folder just before opening a segment in it;
        removing a young folder could race that and fail a write.
        """
        moment = _partition_time(hour_dir)
        if moment is None or time.time() - moment < _KEEP_PARTITION_SECONDS:
            return
        for folder in (hour_dir, hour_dir.parent):
            try:
                folder.rmdir()
            except OSError:
                return  # not empty (or already gone): nothing more to prune


def _partition_time(hour_dir: Path) -> float | None:
    """Start of the hour a `.../date=YYYY-MM-DD/hour=HH` folder stands for."""
    date_part, hour_part = hour_dir.parent.name, hour_dir.name
    if not (date_part.startswith("date=") and hour_part.startswith("hour=")):
        return None
    try:
        dt = datetime.strptime(f"{date_part[5:]} {hour_part[5:]}", "%Y-%m-%d %H")
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC).timestamp()


def make_shipper(settings: Settings) -> SegmentShipper | None:
    """A (not yet started) shipper for the configured store; None for the local backend.

    With the local backend the spool already is the store, so there is nothing to ship.
    """
    if settings.storage.backend != "s3":
        return None
    return SegmentShipper(open_store(settings.storage), settings.storage.root)
