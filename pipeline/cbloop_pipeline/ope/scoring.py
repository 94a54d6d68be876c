"""The target policy's pmf on every logged event, computed by VW at native speed.

`score_file` runs one test-only VW pass over the joined DSJSON file
(`<vw_args> --dsjson -t -i model -d data -p preds`): VW parses on its own thread and writes
each example's pmf to the predictions file, which is read back in bulk. There is no Python
call per example. `score_file_per_example` is the obvious `ws.predict(line)` loop, kept as a
reference and for the speed comparison in `pipeline.ope.benchmark`.
"""

from __future__ import annotations

import logging
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vowpalwabbit

from cbloop.errors import CbloopError
from cbloop_pipeline.ope.logged import FloatArray, IntArray, LoggedEvents, read_logged_events
from cbloop_pipeline.ope.vw_io import PredictionMismatch, VWRunError, parse_action_values, run_vw

logger = logging.getLogger(__name__)

# VW prints probabilities with 6 significant digits and computes them in float32, so a pmf
# sums to 1 only approximately; a larger gap means the model is not a cb_explore_adf policy.
_PMF_SUM_TOLERANCE = 1e-3


class ScoringError(CbloopError):
    """The model's output on the data is not a usable target-policy pmf."""


@dataclass(frozen=True, eq=False)
class TargetScores:
    """Target policy pmf for every event of a file.

    Attributes:
        offsets: event i's actions are pmf[offsets[i]:offsets[i + 1]], aligned with `_multi`.
        pmf: flat probabilities of all events.
        target_probability: pmf at each event's logged action (`_label_Action`).
    """

    offsets: IntArray
    pmf: FloatArray
    target_probability: FloatArray

    @property
    def n(self) -> int:
        return int(self.target_probability.shape[0])

    def event_pmf(self, i: int) -> FloatArray:
        return self.pmf[self.offsets[i] : self.offsets[i + 1]]


def _checked_scores(pmf: FloatArray, logged: LoggedEvents) -> TargetScores:
    offsets = logged.offsets
    if logged.n:
        sums = np.add.reduceat(pmf, offsets[:-1])
        bad = np.abs(sums - 1.0) > _PMF_SUM_TOLERANCE
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ScoringError(
                f"event {logged.event_id[i]!r}: model pmf sums to {sums[i]:.6f}, not 1 "
                "(are these --cb_explore_adf arguments?)"
            )
    # Float32 rounding can put a probability a hair outside [0, 1].
    pmf = np.clip(pmf, 0.0, 1.0)
    target = pmf[offsets[:-1] + logged.logged_action]
    return TargetScores(offsets=offsets, pmf=pmf, target_probability=target)


def score_file(
    data_path: Path,
    model_path: Path,
    vw_args: str,
    *,
    logged: LoggedEvents | None = None,
    tmp_dir: Path | None = None,
) -> TargetScores:
    """Score every event of a joined DSJSON file with the policy in `model_path`.

    Args:
        data_path: joined DSJSON (labels first).
        model_path: VW model of the target policy.
        vw_args: the experiment's full VW arguments (`--cb_explore_adf ...`), without
            --dsjson/-i/-d/-p/--quiet.
        logged: the file's logged events if already read (saves a second read).
        tmp_dir: where the temporary predictions file goes (default: system temp).
    """
    if logged is None:
        logged = read_logged_events(data_path)
    with tempfile.TemporaryDirectory(prefix="cbloop-ope-score-", dir=tmp_dir) as tmp:
        preds = Path(tmp) / "pmf.txt"
        elapsed = run_scoring(data_path, model_path, vw_args, preds)
        scores = read_scores(preds, logged, what=f"scoring {data_path} with {model_path}")
    logger.info("scored %d events of %s with %s in %.2fs", logged.n, data_path, model_path, elapsed)
    return scores


def run_scoring(data_path: Path, model_path: Path, vw_args: str, preds: Path) -> float:
    """The VW pass of `score_file` alone (no Python per event; releases the GIL while VW
    runs, so several can run in threads); returns its seconds."""
    args = [
        *shlex.split(vw_args),
        "--dsjson",
        "-t",
        "-i",
        str(model_path),
        "-d",
        str(data_path),
        "-p",
        str(preds),
        "--quiet",
    ]
    return run_vw(args)


def read_scores(preds: Path, logged: LoggedEvents, *, what: str) -> TargetScores:
    """Target scores from a `run_scoring` predictions file of the events in `logged`."""
    text = preds.read_text() if preds.exists() else ""
    try:
        pmf = parse_action_values(text, logged.n_actions)
    except PredictionMismatch as exc:
        raise ScoringError(f"{what}: {exc}") from exc
    return _checked_scores(pmf, logged)


def score_file_per_example(
    data_path: Path,
    model_path: Path,
    vw_args: str,
    *,
    logged: LoggedEvents | None = None,
) -> TargetScores:
    """Reference implementation: one `ws.predict(line)` call per event (slow)."""
    if logged is None:
        logged = read_logged_events(data_path)
    args = [*shlex.split(vw_args), "--dsjson", "-t", "-i", str(model_path), "--quiet"]
    try:
        ws = vowpalwabbit.Workspace(arg_list=args)
    except RuntimeError as exc:  # pybind11 maps VW's exceptions to RuntimeError
        raise VWRunError(f"VW failed with arguments {args}: {exc}") from exc
    parts: list[FloatArray] = []
    try:
        with data_path.open("r", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    parts.append(np.asarray(ws.predict(line), dtype=np.float64))
    finally:
        ws.finish()
    if len(parts) != logged.n:
        raise ScoringError(f"VW scored {len(parts)} lines, the data has {logged.n} events")
    sizes = np.fromiter((p.shape[0] for p in parts), dtype=np.int64, count=len(parts))
    if not np.array_equal(sizes, logged.n_actions):
        raise ScoringError("VW pmf sizes differ from the number of _multi actions")
    pmf = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
    return _checked_scores(pmf, logged)
