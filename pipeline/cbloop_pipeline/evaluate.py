"""`cbloop evaluate`: off-policy estimates of a candidate, the deployed model and the logging
policy, all on the same eval-split events.

The estimators live in pipeline.ope; this module picks the events, runs the pieces once
(one read of the events, one cross-fitted reward model shared by both models, one native VW
scoring pass per model), and stores the results where people and the promotion rule find
them: the candidate's registry metadata, `evaluations/<experiment>/<eval_id>/` (per-event
figures as Parquet plus a summary.json), and the warehouse (via pipeline.mirror).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from cbloop.clock import compact_ts, format_ts
from cbloop.errors import InvalidInput
from cbloop.registry import ModelMetadata, ModelRegistry
from cbloop.settings import ExperimentSettings
from cbloop_pipeline.localfiles import MissingData, local_file, single_file
from cbloop_pipeline.ope.estimators import (
    DEFAULT_CONFIDENCE,
    ESTIMATOR_NAMES,
    Estimate,
    on_policy_mean,
)
from cbloop_pipeline.ope.evaluate import EvaluationResult, evaluate_scores
from cbloop_pipeline.ope.features import read_events_and_features
from cbloop_pipeline.ope.feedback import InvalidFeedback
from cbloop_pipeline.ope.logged import InvalidLoggedEvent, ObjectArray
from cbloop_pipeline.ope.reward_model import DEFAULT_FOLDS, RewardModelMismatch, fit_cross_fitted
from cbloop_pipeline.ope.scoring import ScoringError, read_scores, run_scoring
from cbloop_pipeline.ope.vw_io import VWRunError

logger = logging.getLogger(__name__)

EVENTS_FILE = "events.parquet"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "estimates.png"
ON_POLICY = "on_policy"
#: Which figure a promotion compares the candidate with (pipeline.deploy): the deployed
#: model's mean reward on the events it served itself, else its off-policy estimate on all
#: events, else (nothing deployed) the mean reward of whatever logged the data.
BASELINES = ("deployed_on_policy", "deployed_ope", "logging_policy")
#: The required per-event columns come first; the deployed model's columns let its estimates
#: be recomputed from the same file; `logged_model_id` says which model served each event
#: (the on-policy baseline is the mean reward where it is the deployed one); each estimator's
#: per-event terms (mean = unclipped estimate; influence terms for snips and sndr) follow
#: for the candidate and the deployed model.
EVENT_COLUMNS = (
    "event_id",
    "reward",
    "logged_probability",
    "target_probability",
    "dm_logged",
    "dm_policy",
    "deployed_target_probability",
    "deployed_dm_policy",
    "logged_model_id",
    "served_by_deployed",
    *(f"term_{name}" for name in ESTIMATOR_NAMES),
    *(f"deployed_term_{name}" for name in ESTIMATOR_NAMES),
)


class EvaluateError(InvalidInput):
    """The evaluation cannot run (no events, missing files, unusable model)."""


@dataclass(frozen=True)
class EvalSplit:
    """A finished join's eval split."""

    join_id: str
    eval_key: str


@dataclass(frozen=True)
class EvaluateOptions:
    folds: int = DEFAULT_FOLDS
    seed: int = 0
    confidence: float = DEFAULT_CONFIDENCE
    plot: bool = False
    #: Bootstrap replicates for percentile intervals (0: normal intervals).
    bootstrap: int = 0


@dataclass(frozen=True, eq=False)
class RunResults:
    candidate: EvaluationResult
    deployed: EvaluationResult | None
    logged_by: ObjectArray
    #: The deployed model's mean reward on the events it served (None: it served none).
    on_policy: Estimate | None
    served: int
    bounds: tuple[float, float]


def new_eval_id() -> str:
    return f"ev-{compact_ts()}-{secrets.token_hex(3)}"


def eval_prefix(experiment: str, eval_id: str) -> str:
    return f"evaluations/{experiment}/{eval_id}"


def evaluate_candidate(
    registry: ModelRegistry,
    name: str,
    experiment: ExperimentSettings,
    candidate: ModelMetadata,
    splits: Sequence[EvalSplit],
    *,
    deployed: ModelMetadata | None,
    options: EvaluateOptions | None = None,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Evaluate `candidate` (and `deployed`, unless it is the candidate) on `splits`.

    Returns the evaluation record, which is also appended to the candidate's metadata.
    """
    options = options or EvaluateOptions()
    if not splits:
        raise EvaluateError(f"experiment {name!r} has no eval split to evaluate on")
    if candidate.vw_args != experiment.vw_arguments():
        raise EvaluateError(
            f"model {candidate.model_id} was trained with VW arguments {candidate.vw_args!r}, "
            f"the experiment uses {experiment.vw_arguments()!r}"
        )
    if deployed is not None and deployed.model_id == candidate.model_id:
        deployed = None
    # A deployed model from before a change of VW arguments cannot be scored with the current
    # ones (VW would merge them silently); it is named but not estimated, and the promotion
    # rule then compares with the logging policy.
    scored = deployed if deployed is not None and deployed.vw_args == candidate.vw_args else None
    if deployed is not None and scored is None:
        logger.warning("deployed model %s has other VW arguments; not scored", deployed.model_id)
    store = registry.store
    started = time.perf_counter()
    eval_id = new_eval_id()
    with tempfile.TemporaryDirectory(prefix="cbloop-eval-", dir=work_dir) as tmp_name:
        tmp = Path(tmp_name)
        try:
            files = [local_file(store, s.eval_key, tmp) for s in splits]
        except MissingData as exc:
            raise EvaluateError(str(exc)) from exc
        data = single_file(files, tmp / "eval-input.dsjson")
        try:
            results = _run(
                registry,
                name=name,
                experiment=experiment,
                data=data,
                candidate=candidate,
                deployed=scored,
                served_by=deployed.model_id if deployed is not None else None,
                options=options,
                tmp=tmp,
            )
        except (
            InvalidFeedback,
            InvalidLoggedEvent,
            RewardModelMismatch,
            ScoringError,
            VWRunError,
        ) as exc:
            raise EvaluateError(f"evaluation of {candidate.model_id} failed: {exc}") from exc
        record = _record(
            eval_id,
            name=name,
            experiment=experiment,
            candidate=candidate,
            deployed=deployed,
            splits=splits,
            results=results,
            options=options,
        )
        prefix = eval_prefix(name, eval_id)
        events = tmp / EVENTS_FILE
        write_events(
            events,
            results.candidate,
            results.deployed,
            logged_by=results.logged_by,
            deployed_id=deployed.model_id if deployed else None,
        )
        store.put_file(f"{prefix}/{EVENTS_FILE}", events)
        if options.plot:
            plot = tmp / PLOT_FILE
            plot_estimates(record, plot)
            store.put_file(f"{prefix}/{PLOT_FILE}", plot)
            record["plot_key"] = f"{prefix}/{PLOT_FILE}"
        record["seconds"] = round(time.perf_counter() - started, 3)
        store.put_bytes(f"{prefix}/{SUMMARY_FILE}", json.dumps(record, indent=2).encode())
    # The record joins the metadata last: an evaluation the loop finds there is complete.
    candidate.evaluations.append(record)
    candidate.record("evaluated", eval_id=eval_id, deployed=record["deployed_model_id"])
    registry.update_metadata(candidate)
    logger.info(
        "evaluation %s of %s on %d events in %.1fs",
        eval_id,
        candidate.model_id,
        record["n_events"],
        record["seconds"],
    )
    return record


def _run(
    registry: ModelRegistry,
    *,
    name: str,
    experiment: ExperimentSettings,
    data: Path,
    candidate: ModelMetadata,
    deployed: ModelMetadata | None,
    served_by: str | None,
    options: EvaluateOptions,
    tmp: Path,
) -> RunResults:
    """Both VW scoring passes run in threads (VW releases the GIL) while this thread reads the
    events and their features once and cross-fits the reward model on them."""
    vw_args = experiment.vw_arguments()
    metas = [m for m in (candidate, deployed) if m is not None]
    models = [registry.fetch(name, m.model_id, tmp) for m in metas]
    preds = [tmp / f"pmf-{i}.txt" for i in range(len(metas))]
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ope-score") as pool:
        runs: list[Future[float]] = [
            pool.submit(run_scoring, data, model, vw_args, out)
            for model, out in zip(models, preds, strict=True)
        ]
        try:
            logged, features, logged_by = read_events_and_features(data)
            if logged.n == 0:
                raise EvaluateError("the eval splits hold no events")
            reward_model = fit_cross_fitted(
                logged, features, folds=options.folds, seed=options.seed
            )
        finally:
            # Finish (or fail) the VW passes before their files are read or removed.
            errors = [run.exception() for run in runs]
    for error in errors:
        if error is not None:
            raise error
    out: list[EvaluationResult] = []
    for meta, pred in zip(metas, preds, strict=True):
        scores = read_scores(pred, logged, what=f"scoring {data} with {meta.model_id}")
        out.append(
            evaluate_scores(
                logged,
                scores,
                reward_model,
                confidence=options.confidence,
                bootstrap=options.bootstrap,
                seed=options.seed,
            )
        )
    served = 0
    on_policy = None
    if served_by is not None:
        mask = logged_by == served_by
        served = int(mask.sum())
        if served:
            on_policy = on_policy_mean(
                logged.reward[mask],
                confidence=options.confidence,
                name=ON_POLICY,
                bounds=reward_model.bounds,
            )
    return RunResults(
        candidate=out[0],
        deployed=out[1] if len(out) > 1 else None,
        logged_by=logged_by,
        on_policy=on_policy,
        served=served,
        bounds=reward_model.bounds,
    )


def baseline_of(
    policies: Mapping[str, Any], estimator: str, min_events: int
) -> tuple[str, Mapping[str, Any]]:
    """(baseline kind, its estimate) for a promotion on `estimator` (see BASELINES).

    The deployed model's own on-policy value is preferred when it served at least
    `min_events` (and at least one) of the events: it is what the model really earned, with
    no importance weights or reward model in it. It is the mean over the events that model
    served, which may be a subset of the eval events (the candidate is estimated on all).
    """
    deployed = policies.get("deployed") or {}
    estimates = deployed.get("estimates") or {}
    on_policy = estimates.get(ON_POLICY)
    if (
        on_policy
        and on_policy.get("value") is not None
        and on_policy.get("n", 0) >= max(1, min_events)
    ):
        return "deployed_on_policy", on_policy
    if estimator in estimates:
        return "deployed_ope", estimates[estimator]
    return "logging_policy", policies["logging"]["estimates"]["logging"]


def _estimates(result: EvaluationResult) -> dict[str, dict[str, Any]]:
    return {name: _clean(est) for name, est in result.estimates.items()}


def _clean(est: Estimate) -> dict[str, Any]:
    """JSON has no NaN: undefined figures (SNIPS with all-zero weights) become null."""
    return {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in est.to_dict().items()
    }


def _record(
    eval_id: str,
    *,
    name: str,
    experiment: ExperimentSettings,
    candidate: ModelMetadata,
    deployed: ModelMetadata | None,
    splits: Sequence[EvalSplit],
    results: RunResults,
    options: EvaluateOptions,
) -> dict[str, Any]:
    cand, dep = results.candidate, results.deployed
    ips = cand.estimates["ips"]
    prefix = eval_prefix(name, eval_id)
    deployed_estimates: dict[str, dict[str, Any]] = _estimates(dep) if dep is not None else {}
    if results.on_policy is not None:
        deployed_estimates[ON_POLICY] = _clean(results.on_policy)
    policies: dict[str, Any] = {
        "candidate": {"model_id": candidate.model_id, "estimates": _estimates(cand)},
        "deployed": (
            {
                "model_id": deployed.model_id,
                "estimates": deployed_estimates,
                "served_events": results.served,
                "scored": dep is not None,
            }
            if deployed is not None and deployed_estimates
            else None
        ),
        "logging": {"estimates": {"logging": _clean(cand.logging_policy)}},
    }
    rule = experiment.promotion
    baseline, _ = baseline_of(policies, rule.estimator, rule.min_events)
    return {
        "eval_id": eval_id,
        "experiment": name,
        "created_at": format_ts(),
        "model_id": candidate.model_id,
        "deployed_model_id": deployed.model_id if deployed else None,
        "joins": [s.join_id for s in splits],
        "n_events": cand.n,
        "confidence": options.confidence,
        "primary_estimator": experiment.promotion.estimator,
        "baseline": baseline,
        "effective_sample_size": ips.ess,
        "max_importance_weight": ips.max_weight,
        "reward_model": {
            "kind": "logistic-link, binned tokens",
            "folds": options.folds,
            "seed": options.seed,
            "bounds": list(results.bounds),
        },
        "interval": "bootstrap" if options.bootstrap > 0 else "normal",
        "policies": policies,
        "events_key": f"{prefix}/{EVENTS_FILE}",
        "summary_key": f"{prefix}/{SUMMARY_FILE}",
    }


def write_events(
    path: Path,
    candidate: EvaluationResult,
    deployed: EvaluationResult | None,
    *,
    logged_by: ObjectArray | None = None,
    deployed_id: str | None = None,
) -> None:
    """Per-event figures as Parquet, in the events' file order (see EVENT_COLUMNS).

    An in-memory DuckDB writes it: it reads the numpy arrays directly, so no extra Parquet
    library is needed. NaN in the deployed columns (no deployed model) is stored as NULL.
    """
    n = candidate.n
    missing = np.full(n, np.nan)
    by = logged_by if logged_by is not None else np.full(n, None, dtype=object)
    columns: dict[str, Any] = {
        "event_id": candidate.event_id,
        "reward": candidate.reward,
        "logged_probability": candidate.logged_probability,
        "target_probability": candidate.target_probability,
        "dm_logged": candidate.dm_logged,
        "dm_policy": candidate.dm_policy,
        "deployed_target_probability": deployed.target_probability if deployed else missing,
        "deployed_dm_policy": deployed.dm_policy if deployed else missing,
        "logged_model_id": by,
        "served_by_deployed": (by == deployed_id) if deployed_id else np.zeros(n, dtype=bool),
    }
    for est in ESTIMATOR_NAMES:
        columns[f"term_{est}"] = candidate.terms.get(est, missing)
        columns[f"deployed_term_{est}"] = deployed.terms.get(est, missing) if deployed else missing
    con = duckdb.connect()
    try:
        con.register("eval_events", columns)
        select = ", ".join(
            f"CASE WHEN isnan({c}) THEN NULL ELSE {c} END AS {c}"
            if c.startswith(("term_", "deployed_"))
            else c
            for c in EVENT_COLUMNS
        )
        con.execute(
            f"COPY (SELECT {select} FROM eval_events) TO '{_sql_path(path)}' (FORMAT parquet)"
        )
    finally:
        con.close()


def _sql_path(path: Path) -> str:
    return str(path).replace("'", "''")


def plot_estimates(record: dict[str, Any], out: Path) -> None:
    """Candidate, deployed and logging estimates with their intervals, one row per estimator."""
    # Imported on demand: matplotlib costs ~0.5 s to load and only --plot needs it.
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt  # noqa: PLC0415

    rows: list[tuple[str, dict[str, Any]]] = []
    for role in ("candidate", "deployed"):
        policy = record["policies"].get(role)
        if policy:
            rows += [(f"{role} {k}", v) for k, v in policy["estimates"].items()]
    rows.append(("logging (on-policy)", record["policies"]["logging"]["estimates"]["logging"]))
    rows = [(label, est) for label, est in rows if est.get("value") is not None]
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5))
    for y, (label, est) in enumerate(rows):
        low = est["ci_low"] if est["ci_low"] is not None else est["value"]
        high = est["ci_high"] if est["ci_high"] is not None else est["value"]
        color = (
            "tab:blue"
            if label.startswith("candidate")
            else ("tab:orange" if label.startswith("deployed") else "tab:gray")
        )
        ax.errorbar(
            est["value"],
            y,
            xerr=[[est["value"] - low], [high - est["value"]]],
            fmt="o",
            color=color,
            capsize=4,
        )
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel(f"estimated reward per event ({record['confidence']:.0%} interval)")
    ax.set_title(f"{record['experiment']} {record['eval_id']}: {record['n_events']} events")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
