"""Prometheus metrics of one worker process.

Each worker keeps its own registry and /metrics answers for the worker that served the
scrape (the `pid` label of cbloop_worker_info tells them apart). We chose this over
prometheus multiprocess mode: that mode needs a shared directory wiped at every start and
cannot export live gauges such as the serving model, while per-worker series are exact
and sum cleanly in PromQL (`sum without (instance, pid)`).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cbloop.eventlog import EventLog
from cbloop.eventlog.shipper import SegmentShipper

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


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http = _HttpStats(_LATENCY_BUCKETS)
        self.registry.register(self.http)
        #: Called by the metrics middleware for every answer.
        self.observe_request = self.http.observe
        self.model = Gauge(
            "cbloop_model_info",
            "1 for the model each experiment serves in this worker",
            ["experiment", "model_id"],
            registry=self.registry,
        )
        self.model_loaded = Gauge(
            "cbloop_model_loaded_timestamp_seconds",
            "When the serving model was loaded",
            ["experiment"],
            registry=self.registry,
        )
        self.swaps = Counter(
            "cbloop_model_swaps",
            "Models swapped in while serving",
            ["experiment"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "cbloop_model_refusals",
            "Models refused by the checks",
            ["experiment"],
            registry=self.registry,
        )
        self.watch_errors = Counter(
            "cbloop_model_watch_errors",
            "Failed polls of the model pointer (the watcher retries with backoff)",
            ["experiment"],
            registry=self.registry,
        )
        self.behind = Gauge(
            "cbloop_model_behind_pointer",
            "1 while the served model may lag the registry pointer (polls failing, or the "
            "pointer names a model neither serving nor refused)",
            ["experiment"],
            registry=self.registry,
        )
        Gauge("cbloop_worker_info", "This worker process", ["pid"], registry=self.registry).labels(
            str(os.getpid())
        ).set(1)
        self._event_log = _EventLogCollector()
        self.registry.register(self._event_log)

    def watch_event_log(
        self, event_log: EventLog | None, shipper: SegmentShipper | None = None
    ) -> None:
        self._event_log.event_log = event_log
        self._event_log.shipper = shipper

    def set_model(
        self, experiment: str, model_id: str, loaded_epoch: float, previous: str | None = None
    ) -> None:
        if previous is not None and previous != model_id:
            with contextlib.suppress(KeyError):  # never set in this worker
                self.model.remove(experiment, previous)
        self.model.labels(experiment, model_id).set(1)
        self.model_loaded.labels(experiment).set(loaded_epoch)

    def set_behind(self, experiment: str, behind: bool) -> None:
        self.behind.labels(experiment).set(1 if behind else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
