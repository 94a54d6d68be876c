"""Run the offline-evaluation requests the Personalizer API left in the store.

For a request over [startTime, endTime] with policies P1..Pk: the experiment's joined train
and eval splits are cut to the decisions whose `Timestamp` falls in the range (bytes kept,
file order kept), the eval events and the cross-fitted reward model are prepared once, and
the experiment's own settings ("Online Policy") and every requested policy are trained
fresh on the cut train split and scored on the cut eval split with the code `cbloop search`
uses (tuning.runs.train_and_score: train.learn, then the OPE package's score_file and
evaluate_scores, the scoring `cbloop evaluate` does). So every figure is one the OPE code
gives for that data and policy; the logging policy's on-policy mean comes with them.

The result (cbloop.evaluation_requests) holds per policy every estimator's estimate and the
sums Personalizer's summaries are made of (n, sum w r, sum w, sum (w r)^2, events the
policy could choose the logged action on); the service maps them to Personalizer's shape.
A request that cannot run (no logs in the range, a policy VW refuses) gets a failed result
naming the problem, and is not run again.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from cbloop.clock import format_ts, parse_ts
from cbloop.errors import InvalidInput
from cbloop.evaluation_requests import (
    EVALUATIONS,
    FAILED,
    SUCCEEDED,
    EvaluationRequest,
    EvaluationRequestError,
    pending_requests,
    write_result,
)
from cbloop.settings import ExperimentSettings
from cbloop.storage import ObjectStore
from cbloop_pipeline.join_catalog import FinishedJoin
from cbloop_pipeline.localfiles import MissingData, local_file
from cbloop_pipeline.ope.estimators import DEFAULT_CONFIDENCE
from cbloop_pipeline.ope.evaluate import EvaluationResult
from cbloop_pipeline.ope.logged import InvalidLoggedEvent, read_logged_events
from cbloop_pipeline.ope.reward_model import DEFAULT_FOLDS, RewardModelMismatch, fit_reward_model
from cbloop_pipeline.ope.vw_io import VWRunError
from cbloop_pipeline.tuning.runs import (
    CandidateFailed,
    RunData,
    Scored,
    estimate_dict,
    train_and_score,
)

logger = logging.getLogger(__name__)

#: The name Personalizer gave the policy the loop was learning with.
ONLINE_POLICY = "Online Policy"


class NoLogsInRange(InvalidInput):
    """No joined decision falls in the evaluation's time range."""


@dataclass(frozen=True)
class RunOptions:
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    confidence: float = DEFAULT_CONFIDENCE


def in_range(line: bytes, start: datetime, end: datetime) -> bool:
    """Whether a joined line's decision time is in [start, end]."""
    stamp = orjson.loads(line).get("Timestamp")
    if not isinstance(stamp, str):
        return False
    return start <= parse_ts(stamp) <= end


def cut(paths: Sequence[Path], dest: Path, start: datetime, end: datetime) -> int:
    """The lines of `paths` in [start, end] into `dest`, in order; returns how many."""
    kept = 0
    with dest.open("wb") as out:
        for path in paths:
            with path.open("rb") as src:
                for line in src:
                    if line.strip() and in_range(line, start, end):
                        out.write(line if line.endswith(b"\n") else line + b"\n")
                        kept += 1
    return kept


def cut_joins(
    store: ObjectStore, joins: Sequence[FinishedJoin], request: EvaluationRequest, tmp: Path
) -> tuple[Path, Path, int, int]:
    """The joins' train and eval splits cut to the request's range, as local files in
    `tmp`: (train file, eval file, train events, eval events). NoLogsInRange if either
    split has no decision in the range."""
    try:
        train_paths = [local_file(store, j.train_key, tmp) for j in joins if j.train_events]
        eval_paths = [local_file(store, j.eval_key, tmp) for j in joins if j.eval_events]
    except MissingData as exc:
        raise EvaluationRequestError(str(exc)) from exc
    train, eval_file = tmp / "range-train.dsjson", tmp / "range-eval.dsjson"
    train_events = cut(train_paths, train, request.start, request.end)
    eval_events = cut(eval_paths, eval_file, request.start, request.end)
    window = f"{format_ts(request.start)} to {format_ts(request.end)}"
    if not eval_events:
        raise NoLogsInRange(f"no joined eval-split decision between {window}")
    if not train_events:
        raise NoLogsInRange(f"no joined train-split decision between {window}")
    return train, eval_file, train_events, eval_events


def policy_sums(result: EvaluationResult) -> dict[str, float | int]:
    """What Personalizer's summaries are made of, from the per-event figures."""
    fb = result.feedback()
    weighted = fb.weights * fb.reward
    return {
        "events": fb.n,
        "ips_numerator": float(weighted.sum()),
        "weight_sum": float(fb.weights.sum()),
        "sum_of_squares": float((weighted**2).sum()),
        "non_zero_probability": int(np.count_nonzero(fb.target_probability > 0)),
    }


def _policy_result(name: str, arguments: str, vw_arguments: str, scored: Scored) -> dict[str, Any]:
    result = scored.result
    return {
        "name": name,
        "arguments": arguments,
        "vw_arguments": vw_arguments,
        "estimates": {k: estimate_dict(v) for k, v in result.estimates.items()},
        "sums": policy_sums(result),
        "examples_trained": scored.examples,
        "error": None,
    }


def evaluate_request(
    store: ObjectStore,
    joins: Sequence[FinishedJoin],
    experiment: ExperimentSettings,
    request: EvaluationRequest,
    *,
    options: RunOptions | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """The figures of `request` (raises InvalidInput when it cannot run at all)."""
    options = options or RunOptions()
    started = time.perf_counter()
    policies = [(ONLINE_POLICY, experiment.vw_arguments(), experiment)] + [
        (p.name, p.arguments, p.settings(experiment)) for p in request.policies
    ]
    with tempfile.TemporaryDirectory(prefix="cbloop-pz-eval-", dir=work_dir) as tmp_name:
        tmp = Path(tmp_name)
        train, eval_file, train_events, eval_events = cut_joins(store, joins, request, tmp)
        try:
            logged = read_logged_events(eval_file)
            reward_model = fit_reward_model(
                eval_file,
                experiment.vw_arguments(),
                folds=options.folds,
                seed=options.seed,
                logged=logged,
                tmp_dir=tmp,
            )
        except (InvalidLoggedEvent, RewardModelMismatch, VWRunError) as exc:
            raise EvaluationRequestError(f"cannot prepare the eval events: {exc}") from exc
        data = RunData(
            work=tmp,
            train=train,
            eval=eval_file,
            logged=logged,
            reward_model=reward_model,
            joins=tuple(j.join_id for j in joins),
            train_paths=(train,),
            eval_paths=(eval_file,),
            confidence=options.confidence,
        )
        results: list[dict[str, Any]] = []
        logging_estimate: dict[str, Any] | None = None
        for i, (name, arguments, settings) in enumerate(policies):
            vw_arguments = settings.vw_arguments()
            try:
                scored = train_and_score(data, vw_arguments, f"policy{i}")
            except CandidateFailed as exc:
                results.append(
                    {
                        "name": name,
                        "arguments": arguments,
                        "vw_arguments": vw_arguments,
                        "error": str(exc),
                    }
                )
                continue
            results.append(_policy_result(name, arguments, vw_arguments, scored))
            logging_estimate = estimate_dict(scored.result.logging_policy)
    failed = [r for r in results if r["error"] is not None]
    return {
        "status": FAILED if failed else SUCCEEDED,
        "error": (
            "; ".join(f"policy {r['name']!r} failed: {r['error']}" for r in failed)
            if failed
            else None
        ),
        "finishedAt": format_ts(),
        "seconds": round(time.perf_counter() - started, 3),
        "train_events": train_events,
        "eval_events": eval_events,
        "joins": list(data.joins),
        "confidence": options.confidence,
        "reward_model": {"folds": options.folds, "seed": options.seed},
        "primary_estimator": experiment.promotion.estimator,
        "logging_policy": logging_estimate,
        "policies": results,
    }


def failed_result(error: str) -> dict[str, Any]:
    return {"status": FAILED, "error": error, "finishedAt": format_ts(), "policies": []}


def _finite(value: Any) -> Any:
    """JSON has no NaN (result files are written with allow_nan=False)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


#: Runs one request and returns its result (raises InvalidInput when it cannot run).
Runner = Callable[[EvaluationRequest], dict[str, Any]]


def run_requests(
    store: ObjectStore, name: str, *, kind: str, runner: Runner, only: str | None = None
) -> list[tuple[str, str]]:
    """Run every pending request of `kind` of experiment `name` (or only the one with id
    `only`) and write its result; returns (id, status) per request run."""
    done: list[tuple[str, str]] = []
    for request in pending_requests(store, name, kind):
        if only is not None and request.id != only:
            continue
        try:
            result = runner(request)
        except InvalidInput as exc:
            # A request that cannot run stays failed (not retried every cycle); a storage or
            # VW outage (TransientError and the rest) propagates and the request stays pending.
            logger.warning("%s %s of %s failed: %s", kind, request.id, name, exc)
            result = failed_result(str(exc))
        write_result(store, name, request.id, _finite(result), kind)
        logger.info("%s %s of %s: %s", kind, request.id, name, result["status"])
        done.append((request.id, str(result["status"])))
    return done


def run_pending(
    store: ObjectStore,
    name: str,
    experiment: ExperimentSettings,
    joins: Sequence[FinishedJoin],
    *,
    only: str | None = None,
    options: RunOptions | None = None,
    work_dir: Path | None = None,
) -> list[tuple[str, str]]:
    """Run every pending evaluation of experiment `name` (or only the one with id `only`)."""

    def runner(request: EvaluationRequest) -> dict[str, Any]:
        return evaluate_request(
            store, joins, experiment, request, options=options, work_dir=work_dir
        )

    return run_requests(store, name, kind=EVALUATIONS, runner=runner, only=only)
