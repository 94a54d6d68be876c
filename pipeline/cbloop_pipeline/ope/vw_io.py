"""Running VW over a whole file and reading back its per-action predictions.

VW's own parser reads the file on its parser thread (native speed) and writes one line per
example to the `-p` file: `action:value,action:value,...` with 0-based action indices into
`_multi`, sorted by value, followed by an empty line. That layout is shared by
`--cb_explore_adf` (value = probability) and `--cb_adf --rank_all` (value = predicted cost).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import numpy.typing as npt
import vowpalwabbit

from cbloop.errors import CbloopError

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class VWRunError(CbloopError):
    """VW refused its arguments, a model file, or a data file."""


class PredictionMismatch(CbloopError):
    """VW's prediction file does not line up with the events read from the same data file."""


def run_vw(arg_list: list[str]) -> float:
    """Run VW with `arg_list` (which names its input with -d) to completion; returns seconds.

    Arguments go as a list, not a string, because pyvw splits strings on every space and
    would break paths that contain one.
    """
    started = time.perf_counter()
    try:
        # pyvw starts its native parser inside the constructor when -d is present.
        ws = vowpalwabbit.Workspace(arg_list=arg_list)
        ws.finish()
    except RuntimeError as exc:  # pybind11 maps VW's exceptions to RuntimeError
        raise VWRunError(f"VW failed with arguments {arg_list}: {exc}") from exc
    elapsed = time.perf_counter() - started
    logger.debug("vw %s finished in %.3fs", " ".join(arg_list), elapsed)
    return elapsed


def parse_action_values(text: str, n_actions: IntArray) -> FloatArray:
    """Scatter VW `action:value,...` lines into a flat array aligned with each `_multi`.

    Event i occupies [offsets[i], offsets[i + 1]) with offsets = cumsum of `n_actions`.
    Raises `PredictionMismatch` if the number of lines or actions per line differs from
    `n_actions` (VW skipped or misread an example), or an action index repeats or is out of
    range.
    """
    lines = [ln for ln in text.split("\n") if ln]
    n = int(n_actions.shape[0])
    if len(lines) != n:
        raise PredictionMismatch(f"VW wrote {len(lines)} predictions for {n} events")
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if " " in text:
        # A non-empty example tag is printed after a space; it is not part of the scores.
        lines = [ln.partition(" ")[0] for ln in lines]
    counts = np.fromiter((ln.count(",") + 1 for ln in lines), dtype=np.int64, count=n)
    if not np.array_equal(counts, n_actions):
        i = int(np.flatnonzero(counts != n_actions)[0])
        raise PredictionMismatch(
            f"event {i}: VW scored {counts[i]} actions, the data has {n_actions[i]}"
        )
    # One bulk float conversion of every token is far cheaper than splitting pairs in Python.
    try:
        flat = np.array(",".join(lines).replace(":", ",").split(","), dtype=np.float64)
    except ValueError as exc:
        raise PredictionMismatch(f"unreadable VW prediction file: {exc}") from exc
    raw_index = flat[0::2]
    values = flat[1::2]
    index = raw_index.astype(np.int64)
    event_of = np.repeat(np.arange(n, dtype=np.int64), counts)
    bad = (index != raw_index) | (index < 0) | (index >= n_actions[event_of])
    if bad.any():
        i = int(event_of[np.flatnonzero(bad)[0]])
        raise PredictionMismatch(f"event {i}: action index out of range in VW predictions")
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(n_actions, out=offsets[1:])
    positions = offsets[event_of] + index
    hits = np.bincount(positions, minlength=int(offsets[-1]))
    if (hits != 1).any():
        # Every line has exactly n_actions[i] in-range pairs, so a miss means a repeat.
        pos = int(np.flatnonzero(hits != 1)[0])
        i = int(np.searchsorted(offsets, pos, side="right") - 1)
        raise PredictionMismatch(f"event {i}: repeated action index in VW predictions")
    out = np.empty(int(offsets[-1]), dtype=np.float64)
    out[positions] = values
    return out
