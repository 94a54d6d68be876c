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
from collections.abc import Sequence
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
from cbloop_pipeline.ope.estimators import DEFAULT_CONFIDENCE, Estimate
from cbloop_pipeline.ope.evaluate import EvaluationResult, evaluate_scores
from cbloop_pipeline.ope.feedback import InvalidFeedback
from cbloop_pipeline.ope.logged import InvalidLoggedEvent, read_logged_events
from cbloop_pipeline.ope.reward_model import DEFAULT_FOLDS, RewardModelMismatch, fit_reward_model
from cbloop_pipeline.ope.scoring import ScoringError, score_file
from cbloop_pipeline.ope.vw_io import VWRunError

logger = logging.getLogger(__name__)

EVENTS_FILE = "events.parquet"
SUMMARY_FILE = "summary.json"
PLOT_FILE = "estimates.png"
#: The required per-event columns come first; the deployed model's two columns let its
#: estimates be recomputed from the same file.
EVENT_COLUMNS = (
    "event_id",
    "reward",
    "logged_probability",
    "target_probability",
    "dm_logged",
    "dm_policy",
    "deployed_target_probability",
    "deployed_dm_policy",
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
        write_events(events, results[0], results[1])
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
    options: EvaluateOptions,
    tmp: Path,
) -> tuple[EvaluationResult, EvaluationResult | None]:
    vw_args = experiment.vw_arguments()
    logged = read_logged_events(data)
    if logged.n == 0:
        raise EvaluateError("the eval splits hold no events")
    # One reward model for both policies: their DR estimates then differ only by the policy.
    reward_model = fit_reward_model(
        data, vw_args, folds=options.folds, seed=options.seed, logged=logged, tmp_dir=tmp
    )
    out: list[EvaluationResult] = []
    for meta in (candidate, deployed):
        if meta is None:
            continue
        model = registry.fetch(name, meta.model_id, tmp)
        scores = score_file(data, model, vw_args, logged=logged, tmp_dir=tmp)
        out.append(evaluate_scores(logged, scores, reward_model, confidence=options.confidence))
    return out[0], (out[1] if len(out) > 1 else None)


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
    results: tuple[EvaluationResult, EvaluationResult | None],
    options: EvaluateOptions,
) -> dict[str, Any]:
    cand, dep = results
    ips = cand.estimates["ips"]
    prefix = eval_prefix(name, eval_id)
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
        "effective_sample_size": ips.ess,
        "max_importance_weight": ips.max_weight,
        "reward_model": {"folds": options.folds, "seed": options.seed},
        "policies": {
            "candidate": {"model_id": candidate.model_id, "estimates": _estimates(cand)},
            "deployed": (
                {"model_id": deployed.model_id, "estimates": _estimates(dep)}
                if deployed is not None and dep is not None
                else None
            ),
            "logging": {"estimates": {"logging": _clean(cand.logging_policy)}},
        },
        "events_key": f"{prefix}/{EVENTS_FILE}",
        "summary_key": f"{prefix}/{SUMMARY_FILE}",
    }


def write_events(
    path: Path, candidate: EvaluationResult, deployed: EvaluationResult | None
) -> None:
    """Per-event figures as Parquet, in the events' file order.

    An in-memory DuckDB writes it: it reads the numpy arrays directly, so no extra Parquet
    library is needed. NaN in the deployed columns (no deployed model) is stored as NULL.
    """
    n = candidate.n
    missing = np.full(n, np.nan)
    columns = {
        "event_id": candidate.event_id,
        "reward": candidate.reward,
        "logged_probability": candidate.logged_probability,
        "target_probability": candidate.target_probability,
        "dm_logged": candidate.dm_logged,
        "dm_policy": candidate.dm_policy,
        "deployed_target_probability": deployed.target_probability if deployed else missing,
        "deployed_dm_policy": deployed.dm_policy if deployed else missing,
    }
    con = duckdb.connect()
    try:
        con.register("eval_events", columns)
        select = ", ".join(EVENT_COLUMNS)
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
