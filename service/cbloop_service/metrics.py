"""Prometheus metrics of a worker process, aggregated across workers when there are several.

One worker (tests, `cbloop serve --workers 1`): a plain registry; request counts and
latencies are kept as plain numbers (`_HttpStats`) because the locks of prometheus_client's
metric objects were a visible share of a rank request's cost.

Several workers (`cbloop serve --workers N` sets PROMETHEUS_MULTIPROC_DIR for its run):
prometheus_client's multiprocess mode. Every value lives in per-process files in that
folder and /metrics, whichever worker answers, reads all of them, so one scrape sees the
whole service. Requests are still counted as plain numbers and, with the event-log
numbers, copied into shared counters as deltas (every second, at each scrape a worker
answers and when it stops); gauges of a worker vanish when it exits
(`mark_process_dead`), and `cbloop_worker_info` lists every live pid.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import math
import os
import re
import threading
from bisect import bisect_left
from collections.abc import Iterator
from typing import Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cbloop.eventlog import EventLog
from cbloop.eventlog.shipper import SegmentShipper

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: How often a worker copies its event-log counters into the shared files.
SYNC_SECONDS = 1.0
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+?_(\d+)\.db$")


def multiprocess_enabled() -> bool:
    """Whether prometheus_client stores values in shared files in this process."""
    return bool(getattr(values.ValueClass, "_multiprocess", False)) and MULTIPROC_ENV in os.environ


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class _EventLogCollector(Collector):
    """Reads the writers' own counters at scrape time, so writing a line costs nothing extra."""

    def __init__(self) -> None:
        self.event_log: EventLog | None = None
        self.shipper: SegmentShipper | None = None

    def collect(self) -> Iterator[Metric]:
        lines = CounterMetricFamily(
            "cbloop_eventlog_lines_written", "Lines handed to the OS, by kind", labels=["kind"]
        )
        closed = CounterMetricFamily(
            "cbloop_eventlog_segments_closed",
            "Segments closed and renamed, by kind",
            labels=["kind"],
        )
        if self.event_log is not None:
            for writer in (self.event_log.decisions, self.event_log.outcomes):
                lines.add_metric([writer.kind], writer.lines_written)
                closed.add_metric([writer.kind], writer.segments_closed)
        yield lines
        yield closed
        if self.shipper is not None:  # only with the s3 backend
            yield CounterMetricFamily(
                "cbloop_eventlog_segments_shipped",
                "Closed segments uploaded to the object store",
                value=self.shipper.shipped,
            )
            yield CounterMetricFamily(
                "cbloop_eventlog_ship_failures",
                "Failed segment upload attempts",
                value=self.shipper.failed_attempts,
            )
            yield GaugeMetricFamily(
                "cbloop_eventlog_segments_pending",
                "Closed segments waiting to be uploaded",
                value=self.shipper.pending,
            )


def _le(bound: float) -> str:
    # Prometheus spells bucket bounds like Go: "+Inf", "0.005", "1.0".
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _Series:
    __slots__ = ("buckets", "count", "total")

    def __init__(self, n_buckets: int) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * n_buckets  # per bucket, not cumulative; +Inf last


class _HttpStats(Collector):
    """Request counts and latency histograms kept as plain numbers.

    Only the event loop thread records requests and renders /metrics, so the locks that
    prometheus_client's Counter and Histogram take on every update buy nothing here, and
    they were a visible share of a rank request's cost.
    """

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[tuple[str, str, int], _Series] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series(len(self.bounds) + 1)
        series.count += 1
        series.total += seconds
        series.buckets[bisect_left(self.bounds, seconds)] += 1

    def collect(self) -> Iterator[Metric]:
        labels = ["route", "method", "status"]
        requests = CounterMetricFamily(
            "cbloop_http_requests", "HTTP requests by route, method and status", labels=labels
        )
        latency = HistogramMetricFamily(
            "cbloop_http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            labels=labels,
        )
        edges = [_le(b) for b in (*self.bounds, math.inf)]
        for (route, method, status), series in list(self.series.items()):
            values = [route, method, str(status)]
            requests.add_metric(values, series.count)
            cumulative = [float(c) for c in itertools.accumulate(series.buckets)]
            latency.add_metric(
                values, buckets=list(zip(edges, cumulative, strict=True)), sum_value=series.total
            )
        yield requests
        yield latency


class _SharedCounters:
    """Multiprocess mode: this worker's plain counts copied into the shared files as deltas.

    Requests keep being counted as plain numbers on the event loop (a shared-file update
    per request cost about 10x more than the rest of the bookkeeping); the copy runs every
    SYNC_SECONDS, at each scrape this worker answers and when it stops.
    """

    def __init__(self, http: _HttpStats) -> None:
        self.http = http
        labels = ["route", "method", "status"]
        self.requests = Counter(
            "cbloop_http_requests",
            "HTTP requests by route, method and status",
            labels,
            registry=None,
        )
        self.latency = Histogram(
            "cbloop_http_request_duration_seconds",
            "HTTP request latency by route, method and status",
            labels,
            registry=None,
            buckets=_LATENCY_BUCKETS,
        )
        self._http_copied: dict[tuple[str, str, int], tuple[int, float, list[int]]] = {}
        kind = ["kind"]
        self.lines = Counter(
            "cbloop_eventlog_lines_written", "Lines handed to the OS, by kind", kind, registry=None
        )
        self.closed = Counter(
            "cbloop_eventlog_segments_closed",
            "Segments closed and renamed, by kind",
            kind,
            registry=None,
        )
        self.shipped = Counter(
            "cbloop_eventlog_segments_shipped",
            "Closed segments uploaded to the object store",
            registry=None,
        )
        self.ship_failures = Counter(
            "cbloop_eventlog_ship_failures", "Failed segment upload attempts", registry=None
        )
        self.pending = Gauge(
            "cbloop_eventlog_segments_pending",
            "Closed segments waiting to be uploaded",
            registry=None,
            multiprocess_mode="livesum",
        )
        self._copied: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def _add(self, counter: Counter, key: tuple[str, str], total: float) -> None:
        delta = total - self._copied.get(key, 0.0)
        if delta > 0:
            (counter.labels(key[1]) if key[1] else counter).inc(delta)
            self._copied[key] = total

    def _sync_http(self) -> None:
        for key, series in list(self.http.series.items()):
            # Read while the event loop may add to it: each field only grows, so a copy
            # that misses the latest request catches it at the next sync.
            count, total, buckets = series.count, series.total, list(series.buckets)
            last_count, last_total, last_buckets = self._http_copied.get(
                key, (0, 0.0, [0] * len(buckets))
            )
            if count == last_count and buckets == last_buckets:
                continue
            route, method, status = key
            if count > last_count:
                self.requests.labels(route, method, status).inc(count - last_count)
            child = self.latency.labels(route, method, status)
            # Histogram has no public "add n observations to bucket i"; the per-bucket
            # values are what observe() itself increments.
            child._sum.inc(total - last_total)
            for bucket, now, before in zip(child._buckets, buckets, last_buckets, strict=True):
                if now > before:
                    bucket.inc(now - before)
            self._http_copied[key] = (count, total, buckets)

    def sync(self, event_log: EventLog | None, shipper: SegmentShipper | None) -> None:
        with self._lock:  # the sync thread and a scrape may both call this
            self._sync_http()
            if event_log is not None:
                for writer in (event_log.decisions, event_log.outcomes):
                    self._add(self.lines, ("lines", writer.kind), writer.lines_written)
                    self._add(self.closed, ("closed", writer.kind), writer.segments_closed)
            if shipper is not None:
                self._add(self.shipped, ("shipped", ""), shipper.shipped)
                self._add(self.ship_failures, ("failures", ""), shipper.failed_attempts)
                self.pending.set(shipper.pending)


class ServiceMetrics:
    def __init__(self) -> None:
        self.multiprocess = multiprocess_enabled()
        self.registry = CollectorRegistry(auto_describe=True)
        # Multiprocess mode: the values live in shared files, read back at render time, so
        # the metric objects need no registry of their own.
        own = None if self.multiprocess else self.registry
        #: Called by the metrics middleware for every answer: plain numbers in both modes.
        self.http = _HttpStats(_LATENCY_BUCKETS)
        self.observe_request = self.http.observe
        if self.multiprocess:
            _forget_dead_workers()
            self._shared: _SharedCounters | None = _SharedCounters(self.http)
        else:
            self.registry.register(self.http)
            self._shared = None
        live: Literal["liveall"] = "liveall"
        self.model = Gauge(
            "cbloop_model_info",
            "1 for the model each experiment serves in this worker",
            ["experiment", "model_id"],
            registry=own,
            multiprocess_mode=live,
        )
        self.model_loaded = Gauge(
            "cbloop_model_loaded_timestamp_seconds",
            "When the serving model was loaded",
            ["experiment"],
            registry=own,
            multiprocess_mode=live,
        )
        self.swaps = Counter(
            "cbloop_model_swaps",
            "Models swapped in while serving",
            ["experiment"],
            registry=own,
        )
        self.refusals = Counter(
            "cbloop_model_refusals",
            "Models refused by the checks",
            ["experiment"],
            registry=own,
        )
        self.watch_errors = Counter(
            "cbloop_model_watch_errors",
            "Failed polls of the model pointer (the watcher retries with backoff)",
            ["experiment"],
            registry=own,
        )
        self.behind = Gauge(
            "cbloop_model_behind_pointer",
            "1 while the served model may lag the registry pointer (polls failing, or the "
            "pointer names a model neither serving nor refused)",
            ["experiment"],
            registry=own,
            multiprocess_mode=live,
        )
        if self.multiprocess:  # the pid label comes from the multiprocess collector
            Gauge(
                "cbloop_worker_info", "A live worker process", registry=None, multiprocess_mode=live
            ).set(1)
        else:
            Gauge("cbloop_worker_info", "This worker process", ["pid"], registry=own).labels(
                str(os.getpid())
            ).set(1)
        self._event_log = _EventLogCollector()
        if not self.multiprocess:
            self.registry.register(self._event_log)
        self._sync_stop = threading.Event()
        self._sync_thread: threading.Thread | None = None

    def watch_event_log(
        self, event_log: EventLog | None, shipper: SegmentShipper | None = None
    ) -> None:
        if event_log is None:
            self._stop_sync()
            self._sync()  # the last lines and the segments closed at shutdown
        self._event_log.event_log = event_log
        self._event_log.shipper = shipper
        if event_log is not None and self._shared is not None and self._sync_thread is None:
            self._sync_stop.clear()
            self._sync_thread = threading.Thread(
                target=self._sync_loop, name="metrics-sync", daemon=True
            )
            self._sync_thread.start()

    def _sync(self) -> None:
        if self._shared is not None:
            self._shared.sync(self._event_log.event_log, self._event_log.shipper)

    def _sync_loop(self) -> None:
        while not self._sync_stop.wait(SYNC_SECONDS):
            try:
                self._sync()
            except Exception:  # the top of a long-lived thread: log and go on
                logger.exception("could not copy this worker's counts to the shared metrics")

    def _stop_sync(self) -> None:
        self._sync_stop.set()
        if self._sync_thread is not None:
            self._sync_thread.join()
            self._sync_thread = None

    def set_model(
        self, experiment: str, model_id: str, loaded_epoch: float, previous: str | None = None
    ) -> None:
        if previous is not None and previous != model_id:
            if self.multiprocess:
                # Shared files cannot drop a series; 0 says "no longer served here".
                self.model.labels(experiment, previous).set(0)
            else:
                with contextlib.suppress(KeyError):  # never set in this worker
                    self.model.remove(experiment, previous)
        self.model.labels(experiment, model_id).set(1)
        self.model_loaded.labels(experiment).set(loaded_epoch)

    def set_behind(self, experiment: str, behind: bool) -> None:
        self.behind.labels(experiment).set(1 if behind else 0)

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        self._sync()  # this worker's own numbers are exact; siblings' are at most 1 s old
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def close(self) -> None:
        """At worker exit: stop syncing and drop this worker's live gauges from the files."""
        self._stop_sync()
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _forget_dead_workers() -> None:
    """Drop live gauges of workers that died without closing (SIGKILL, OOM)."""
    folder = os.environ[MULTIPROC_ENV]
    for path in glob.glob(os.path.join(folder, "gauge_live*_*.db")):
        match = _LIVE_GAUGE_FILE.match(os.path.basename(path))
        if match is None:
            continue
        pid = int(match.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, folder)  # type: ignore[no-untyped-call]
        except PermissionError:
            continue  # alive, someone else's
