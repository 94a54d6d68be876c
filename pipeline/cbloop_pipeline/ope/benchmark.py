"""Speed of target-policy scoring: VW's native file pass versus a per-example Python loop.

Timing lives here rather than in tests (tests make no timing assertions); `cbloop bench`
or a developer can call `benchmark_scoring` on a real eval file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbloop_pipeline.ope.logged import read_logged_events
from cbloop_pipeline.ope.scoring import score_file, score_file_per_example

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoringBenchmark:
    n_events: int
    native_seconds: float
    python_loop_seconds: float
    max_abs_pmf_difference: float

    @property
    def native_events_per_second(self) -> float:
        return self.n_events / self.native_seconds

    @property
    def python_loop_events_per_second(self) -> float:
        return self.n_events / self.python_loop_seconds


def benchmark_scoring(data_path: Path, model_path: Path, vw_args: str) -> ScoringBenchmark:
    """Score `data_path` both ways (reading the logged fields once, outside the timings)."""
    logged = read_logged_events(data_path)
    started = time.perf_counter()
    native = score_file(data_path, model_path, vw_args, logged=logged)
    native_seconds = time.perf_counter() - started
    started = time.perf_counter()
    loop = score_file_per_example(data_path, model_path, vw_args, logged=logged)
    loop_seconds = time.perf_counter() - started
    diff = float(np.abs(native.pmf - loop.pmf).max()) if logged.n else 0.0
    result = ScoringBenchmark(logged.n, native_seconds, loop_seconds, diff)
    logger.info(
        "scoring %d events: native %.0f ev/s, python loop %.0f ev/s (max |dpmf| %.2g)",
        result.n_events,
        result.native_events_per_second,
        result.python_loop_events_per_second,
        diff,
    )
    return result
