"""Run the feature-importance requests the Personalizer API left in the store.

A request's range is cut out of the experiment's joined splits (as for evaluations), and
`cbloop features` (tuning.features.evaluate_features: leave one VW namespace out, paired
difference on the same eval events) runs on it unchanged. evaluate_features reads its
input through finished joins in the store, so the cut splits are put in the store for the
run (`personalizer/featureimportances/<experiment>/<id>/input/`) and removed afterwards.
The result holds the report `cbloop features` writes (`report`) and its namespace scores.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cbloop.clock import format_ts
from cbloop.evaluation_requests import (
    FEATURE_IMPORTANCES,
    SUCCEEDED,
    EvaluationRequest,
    folder,
)
from cbloop.settings import ExperimentSettings
from cbloop.storage import ObjectNotFound, ObjectStore
from cbloop_pipeline.join_catalog import FinishedJoin
from cbloop_pipeline.personalizer_evaluations import RunOptions, cut_joins, run_requests
from cbloop_pipeline.tuning.features import evaluate_features
from cbloop_pipeline.tuning.search import SearchOptions

RANGE_JOIN = "personalizer-range"


def importance_request(
    store: ObjectStore,
    joins: Sequence[FinishedJoin],
    experiment: ExperimentSettings,
    request: EvaluationRequest,
    *,
    options: RunOptions | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """The namespace scores of `request` (raises InvalidInput when it cannot run)."""
    options = options or RunOptions()
    started = time.perf_counter()
    base = f"{folder(request.experiment, request.id, FEATURE_IMPORTANCES)}/input"
    keys = (f"{base}/train.dsjson", f"{base}/eval.dsjson")
    with tempfile.TemporaryDirectory(prefix="cbloop-pz-fi-", dir=work_dir) as tmp_name:
        tmp = Path(tmp_name)
        train, eval_file, train_events, eval_events = cut_joins(store, joins, request, tmp)
        try:
            store.put_file(keys[0], train)
            store.put_file(keys[1], eval_file)
            join = FinishedJoin(RANGE_JOIN, keys[0], keys[1], train_events, eval_events)
            report = evaluate_features(
                store,
                request.experiment,
                experiment,
                [join],
                options=SearchOptions(
                    estimator=experiment.promotion.estimator,
                    folds=options.folds,
                    seed=options.seed,
                    confidence=options.confidence,
                ),
                work_dir=tmp,
            )
        finally:
            for key in keys:
                with contextlib.suppress(ObjectNotFound):
                    store.delete(key)
    body = report.to_dict()
    return {
        "status": SUCCEEDED,
        "error": None,
        "finishedAt": format_ts(),
        "seconds": round(time.perf_counter() - started, 3),
        "train_events": train_events,
        "eval_events": eval_events,
        "report": body,
    }


def run_pending_importances(
    store: ObjectStore,
    name: str,
    experiment: ExperimentSettings,
    joins: Sequence[FinishedJoin],
    *,
    only: str | None = None,
    options: RunOptions | None = None,
    work_dir: Path | None = None,
) -> list[tuple[str, str]]:
    """Run every pending feature-importance request of experiment `name`."""

    def runner(request: EvaluationRequest) -> dict[str, Any]:
        return importance_request(
            store, joins, experiment, request, options=options, work_dir=work_dir
        )

    return run_requests(store, name, kind=FEATURE_IMPORTANCES, runner=runner, only=only)
