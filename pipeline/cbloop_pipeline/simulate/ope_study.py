"""The estimators on seeded OPE worlds with known values: RMSE, coverage, range.

`python -m cbloop_pipeline.simulate.ope_study --seeds 30` prints the README table: for every
world (pipeline.simulate.ope_worlds) and estimator, over the seeds, the RMSE against the true
value, the bias, how often the 95 % interval covers the truth, the mean interval width and
how often the estimate, before its clip to the reward range, left [0, 1] (RMSE, bias and
coverage are of the clipped estimates, which is what promotion uses).

Each seed writes its events as joined DSJSON and runs the real reader, the cross-fitted
reward model and every estimator on them; only the target policy's pmf comes from the world
instead of a VW model.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbloop_pipeline.ope.estimators import ESTIMATOR_NAMES, Estimate
from cbloop_pipeline.ope.evaluate import evaluate_scores
from cbloop_pipeline.ope.features import read_events_and_features
from cbloop_pipeline.ope.reward_model import fit_cross_fitted
from cbloop_pipeline.ope.scoring import TargetScores
from cbloop_pipeline.simulate.ope_worlds import WORLDS, OpeWorldSpec, write_world

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SeedResult:
    world: str
    n_events: int
    seed: int
    truth: float
    estimates: dict[str, Estimate]
    dm_min: float
    dm_max: float


@dataclass(frozen=True)
class Summary:
    world: str
    n_events: int
    estimator: str
    seeds: int
    rmse: float
    bias: float
    coverage: float
    mean_width: float
    out_of_range: int
    undefined: int


def run_seed(spec: OpeWorldSpec, seed: int, tmp: Path, n_events: int | None = None) -> SeedResult:
    """One world draw, its events through the real reader, reward model and estimators."""
    written = write_world(spec, seed, tmp / f"{spec.name}-{seed}.dsjson", n_events)
    logged, features, _ = read_events_and_features(written.path)
    model = fit_cross_fitted(logged, features, folds=2, seed=seed)
    offsets = logged.offsets
    scores = TargetScores(
        offsets=offsets,
        pmf=written.target_pmf,
        target_probability=written.target_pmf[offsets[:-1] + logged.logged_action],
    )
    result = evaluate_scores(logged, scores, model)
    written.path.unlink()
    return SeedResult(
        world=spec.name,
        n_events=logged.n,
        seed=seed,
        truth=written.true_value,
        estimates=dict(result.estimates),
        dm_min=float(model.predicted_reward.min()),
        dm_max=float(model.predicted_reward.max()),
    )


def summarise(results: Sequence[SeedResult]) -> list[Summary]:
    out: list[Summary] = []
    first = results[0]
    for name in ESTIMATOR_NAMES:
        ests = [r.estimates[name] for r in results]
        truth = np.array([r.truth for r in results])
        value = np.array([e.value for e in ests])
        raw = np.array([e.raw_value for e in ests])
        low = np.array([e.ci_low for e in ests])
        high = np.array([e.ci_high for e in ests])
        ok = np.isfinite(value)
        err = value[ok] - truth[ok]
        out.append(
            Summary(
                world=first.world,
                n_events=first.n_events,
                estimator=name,
                seeds=len(results),
                rmse=float(np.sqrt(np.mean(err**2))) if ok.any() else math.nan,
                bias=float(np.mean(err)) if ok.any() else math.nan,
                coverage=float(np.mean((low <= truth) & (truth <= high))),
                mean_width=float(np.mean(high[ok] - low[ok])) if ok.any() else math.nan,
                # Before the clip: the clipped value is in range by construction.
                out_of_range=int(np.sum((raw[ok] < 0.0) | (raw[ok] > 1.0))),
                undefined=int((~ok).sum()),
            )
        )
    return out


def run_world(
    spec: OpeWorldSpec, seeds: Iterable[int], n_events: int | None = None
) -> list[SeedResult]:
    with tempfile.TemporaryDirectory(prefix="cbloop-ope-study-") as tmp:
        return [run_seed(spec, s, Path(tmp), n_events) for s in seeds]


def table(rows: Sequence[Summary]) -> str:
    lines = [
        "| world | events | estimator | seeds | RMSE | bias | 95% CI coverage | mean CI width "
        "| raw estimate outside [0, 1] |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.world} | {r.n_events:,} | {r.estimator} | {r.seeds} | {r.rmse:.5f} "
            f"| {r.bias:+.5f} | {r.coverage:.0%} | {r.mean_width:.5f} | {r.out_of_range} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--worlds", nargs="*", default=["sparse", "sparse20k", "dense", "wild"])
    args = parser.parse_args(argv)
    rows: list[Summary] = []
    for label in args.worlds:
        spec = WORLDS["sparse" if label == "sparse20k" else label]
        n = 20_000 if label == "sparse20k" else None
        results = run_world(spec, range(args.seeds), n)
        rows.extend(summarise(results))
        lo = min(r.dm_min for r in results)
        hi = max(r.dm_max for r in results)
        truth = np.mean([r.truth for r in results])
        sys.stdout.write(
            f"{label}: mean true value {truth:.5f}; "
            f"reward-model predictions in [{lo:.4g}, {hi:.4g}]\n"
        )
        sys.stdout.flush()
    sys.stdout.write(table(rows) + "\n")


if __name__ == "__main__":
    main()
