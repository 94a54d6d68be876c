"""Train a fresh policy with given VW arguments on the train splits and score it on the eval
splits: the one step `cbloop search` and `cbloop features` repeat per candidate.

The eval events, and the cross-fitted reward model DR needs, are prepared once per run and
shared by every candidate, so two candidates' estimates differ only through their policies
(as `cbloop evaluate` does for a candidate and the deployed model). The reward model is fit
with the experiment's current VW arguments. Training uses train.learn, i.e. VW in a child
process; scoring is the OPE package's score_file + evaluate_scores, the code `cbloop
evaluate` scores a candidate with.
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cbloop.errors import InvalidInput
from cbloop.storage import ObjectStore
from cbloop_pipeline.join_catalog import FinishedJoin
from cbloop_pipeline.localfiles import MissingData, local_file, single_file
from cbloop_pipeline.ope.estimators import Estimate
from cbloop_pipeline.ope.evaluate import EvaluationResult, evaluate_scores
from cbloop_pipeline.ope.feedback import InvalidFeedback
from cbloop_pipeline.ope.logged import InvalidLoggedEvent, LoggedEvents, read_logged_events
from cbloop_pipeline.ope.reward_model import RewardModel, RewardModelMismatch, fit_reward_model
from cbloop_pipeline.ope.scoring import ScoringError, score_file
from cbloop_pipeline.ope.vw_io import VWRunError
from cbloop_pipeline.train import TrainError, learn

logger = logging.getLogger(__name__)


class TuningError(InvalidInput):
    """A search or feature evaluation cannot run (no joins, no events, unreadable data)."""


class CandidateFailed(InvalidInput):
    """One candidate could not be trained or scored (the run goes on without it)."""


@dataclass(frozen=True)
class RunData:
    """The local files and shared pieces of one search or feature-evaluation run."""

    work: Path
    train: Path
    eval: Path
    logged: LoggedEvents
    reward_model: RewardModel
    joins: tuple[str, ...]
    train_paths: tuple[Path, ...]
    eval_paths: tuple[Path, ...]
    confidence: float

    @property
    def eval_events(self) -> int:
        return self.logged.n


@dataclass(frozen=True)
class Scored:
    result: EvaluationResult
    examples: int
    seconds: float


def estimate_dict(est: Estimate) -> dict[str, Any]:
    """JSON has no NaN: undefined figures become null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in est.to_dict().items()
    }


@contextmanager
def prepared(
    store: ObjectStore,
    joins: Sequence[FinishedJoin],
    current_vw_arguments: str,
    *,
    folds: int,
    seed: int,
    confidence: float,
    work_dir: Path | None = None,
) -> Iterator[RunData]:
    """Local train and eval files of `joins`, the eval events and the shared reward model."""
    trains = [j for j in joins if j.train_events > 0]
    evals = [j for j in joins if j.eval_events > 0]
    if not trains:
        raise TuningError("no join has train events to learn from; run `cbloop join` first")
    if not evals:
        raise TuningError("no join has eval events to score on; run `cbloop join` first")
    with tempfile.TemporaryDirectory(prefix="cbloop-tune-", dir=work_dir) as tmp_name:
        tmp = Path(tmp_name)
        try:
            train_paths = [local_file(store, j.train_key, tmp) for j in trains]
            eval_paths = [local_file(store, j.eval_key, tmp) for j in evals]
        except MissingData as exc:
            raise TuningError(str(exc)) from exc
        train = single_file(train_paths, tmp / "train.dsjson")
        eval_file = single_file(eval_paths, tmp / "eval.dsjson")
        try:
            logged = read_logged_events(eval_file)
            if logged.n == 0:
                raise TuningError("the eval splits hold no events")
            reward_model = fit_reward_model(
                eval_file,
                current_vw_arguments,
                folds=folds,
                seed=seed,
                logged=logged,
                tmp_dir=tmp,
            )
        except (InvalidLoggedEvent, RewardModelMismatch, VWRunError) as exc:
            raise TuningError(f"cannot prepare the eval events: {exc}") from exc
        yield RunData(
            work=tmp,
            train=train,
            eval=eval_file,
            logged=logged,
            reward_model=reward_model,
            joins=tuple(j.join_id for j in joins),
            train_paths=tuple(train_paths),
            eval_paths=tuple(eval_paths),
            confidence=confidence,
        )


def train_and_score(data: RunData, vw_arguments: str, label: str) -> Scored:
    """A fresh model with `vw_arguments` learned on the train file, scored on the eval file."""
    with tempfile.TemporaryDirectory(prefix=f"{label}-", dir=data.work) as tmp_name:
        tmp = Path(tmp_name)
        model = tmp / "model.vw"
        try:
            stats = learn(vw_arguments, data.train, model)
            if stats.not_finite is not None:
                raise CandidateFailed(stats.not_finite)
            if stats.examples == 0:
                raise CandidateFailed("VW learned no labelled example")
            scores = score_file(data.eval, model, vw_arguments, logged=data.logged, tmp_dir=tmp)
            result = evaluate_scores(
                data.logged, scores, data.reward_model, confidence=data.confidence
            )
        except (TrainError, ScoringError, VWRunError, InvalidFeedback) as exc:
            raise CandidateFailed(str(exc)) from exc
    logger.info("%s (%s): trained on %.0f events", label, vw_arguments, stats.examples)
    return Scored(result, int(stats.examples), stats.seconds)
