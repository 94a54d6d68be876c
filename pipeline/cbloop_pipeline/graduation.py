"""Apprentice graduation: when the bandit has shown it beats the baseline, go online.

After each evaluation of an apprentice experiment the loop measures where its bandit stands
(`measure_standing`), on the eval events of that evaluation:
- the imitation rate: how often the bandit's greedy choice (its most probable action) is
  the baseline the app asked for;
- the bandit's value: the evaluation's estimate with the configured estimator
  (`apprentice.graduate.estimator`) and its lower bound;
- the baseline's value: SNIPS of the policy "always the baseline" on the same events (target
  probability 1 on the baseline). SNIPS, not DR: the reward model's figures for the baseline
  action are not kept per event; with the apprentice's constant baseline propensity, SNIPS is
  the mean reward of the events where the baseline was served.

`assess_graduation` then decides: graduate when the bandit's lower bound exceeds the baseline's
value plus `margin`, on at least `min_events` eval events. With `epsilon` 0 the data never
shows an action other than the baseline, so no estimate of a different policy can be trusted
(its importance weights are undefined where the bandit departs from the baseline): such an
experiment never graduates, and the reason says so. The same holds for eval data in which no
decision explored at all.

A graduation is always recorded in the warehouse (`graduations`, migration 0040), and the loop
treats an experiment found there as online from the next cycle. A `ModeSwitch` handed to the
loop applies it where the experiment is defined: `CatalogModeSwitch` writes `mode: online` as
the experiment's next version in the store's catalog, with the evidence, so every worker
serves it online within a poll (`cbloop loop` passes one). The switch runs first: if it
fails, nothing is recorded and the next cycle assesses the same evaluation again.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import duckdb
import numpy as np

from cbloop.clock import utcnow_naive
from cbloop.experiments import ExperimentCatalog
from cbloop.registry import ModelRegistry
from cbloop.settings import ApprenticeSettings, ExperimentSettings
from cbloop_pipeline.join_catalog import finished_joins
from cbloop_pipeline.localfiles import local_file, single_file
from cbloop_pipeline.ope.estimators import SNIPS
from cbloop_pipeline.ope.feedback import BanditFeedback
from cbloop_pipeline.ope.logged import read_logged_events
from cbloop_pipeline.ope.scoring import score_file

logger = logging.getLogger(__name__)

BASELINE_ESTIMATOR = "snips"


@dataclass(frozen=True)
class Graduation:
    graduate: bool
    reason: str
    evidence: dict[str, Any]


class ModeSwitch(Protocol):
    """Persists an experiment's switch from apprentice to online, with its evidence."""

    def switch_to_online(self, experiment: str, evidence: Mapping[str, Any]) -> None: ...


class WarehouseModeSwitch:
    """Records the graduation in the warehouse's `graduations` table (the default)."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def switch_to_online(self, experiment: str, evidence: Mapping[str, Any]) -> None:
        self.con.execute(
            "INSERT INTO graduations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                experiment,
                utcnow_naive(),
                evidence["model_id"],
                evidence["eval_id"],
                evidence["estimator"],
                evidence["estimate"],
                evidence["lower_bound"],
                evidence["baseline_value"],
                evidence["margin"],
                evidence["n_events"],
                json.dumps(dict(evidence)),
            ],
        )


class CatalogModeSwitch:
    """Writes `mode: online` as the experiment's next catalog version, with the evidence."""

    def __init__(self, catalog: ExperimentCatalog, by: str = "cbloop loop") -> None:
        self.catalog = catalog
        self.by = by

    def switch_to_online(self, experiment: str, evidence: Mapping[str, Any]) -> None:
        self.catalog.update(
            experiment,
            {"mode": "online"},
            by=self.by,
            why=(
                f"apprentice graduated: {evidence['estimator']} lower bound "
                f"{evidence['lower_bound']:.4f} beats the baseline's value "
                f"{evidence['baseline_value']:.4f} + margin {evidence['margin']:g} on "
                f"{evidence['n_events']} eval events"
            ),
            evidence=dict(evidence),
        )


def graduation_of(con: duckdb.DuckDBPyConnection, experiment: str) -> dict[str, Any] | None:
    """The experiment's recorded graduation (the first), or None."""
    cursor = con.execute(
        "SELECT * FROM graduations WHERE experiment = ? ORDER BY graduated_at LIMIT 1",
        [experiment],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def effective_mode(
    con: duckdb.DuckDBPyConnection, experiment: str, settings: ExperimentSettings
) -> str:
    """The configured mode, except that a graduated apprentice is online."""
    if settings.mode == "apprentice" and graduation_of(con, experiment) is not None:
        return "online"
    return settings.mode


@dataclass(frozen=True)
class Standing:
    """Where an apprentice's bandit stands against the baseline on one evaluation's events."""

    model_id: str
    eval_id: str
    n_events: int
    estimator: str
    estimate: float | None
    lower_bound: float | None
    upper_bound: float | None
    imitation_rate: float | None
    baseline_value: float | None
    baseline_low: float | None
    baseline_high: float | None
    #: Eval events whose decision gave some probability to an action other than the chosen
    #: one's maximum (p_max < 1): without any, no other policy is identifiable.
    explored_events: int


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def assess_graduation(settings: ApprenticeSettings, standing: Standing) -> Graduation:
    """Graduate when the bandit's lower bound beats the baseline's value by the margin."""
    rule = settings.graduate
    evidence: dict[str, Any] = {
        **asdict(standing),
        "margin": rule.margin,
        "min_events": rule.min_events,
        "epsilon": settings.epsilon,
        "baseline_estimator": BASELINE_ESTIMATOR,
    }

    def no(reason: str) -> Graduation:
        return Graduation(False, reason, evidence)

    if settings.epsilon == 0:
        return no(
            "apprentice.epsilon is 0: only the baseline is ever served, so the data cannot "
            "show the value of any other choice (importance weights undefined off the "
            "baseline); this apprentice never graduates. Set apprentice.epsilon above 0."
        )
    if standing.explored_events == 0:
        return no(
            "no eval event explored (every logged choice had probability 1): the value of "
            "the bandit cannot be estimated from this data"
        )
    if standing.n_events < rule.min_events:
        return no(
            f"{standing.n_events} eval events, fewer than apprentice.graduate.min_events "
            f"({rule.min_events})"
        )
    low, base = _finite(standing.lower_bound), _finite(standing.baseline_value)
    if low is None:
        return no(f"the bandit's {standing.estimator} lower bound is undefined")
    if base is None:
        return no("the baseline's value is undefined (it was never served on these events)")
    if low > base + rule.margin:
        return Graduation(
            True,
            f"the bandit's {standing.estimator} lower bound {low:.4f} beats the baseline's "
            f"value {base:.4f} + margin {rule.margin:g} on {standing.n_events} eval events",
            evidence,
        )
    return no(
        f"the bandit's {standing.estimator} lower bound {low:.4f} does not beat the baseline's "
        f"value {base:.4f} + margin {rule.margin:g}"
    )


def _newest_evaluation(con: duckdb.DuckDBPyConnection, experiment: str) -> tuple[Any, ...] | None:
    return con.execute(
        "SELECT eval_id, model_id, joins, n_events FROM evaluations WHERE experiment = ? "
        "ORDER BY created_at DESC LIMIT 1",
        [experiment],
    ).fetchone()


def _estimate(
    con: duckdb.DuckDBPyConnection, eval_id: str, estimator: str
) -> tuple[float | None, float | None, float | None]:
    row = con.execute(
        "SELECT value, ci_low, ci_high FROM evaluation_estimates "
        "WHERE eval_id = ? AND policy = 'candidate' AND estimator = ?",
        [eval_id, estimator],
    ).fetchone()
    if row is None:
        return None, None, None
    return row[0], row[1], row[2]


def already_assessed(con: duckdb.DuckDBPyConnection, experiment: str, eval_id: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM apprentice_assessments WHERE experiment = ? AND eval_id = ?",
        [experiment, eval_id],
    ).fetchone()
    return bool(row and row[0])


def measure_standing(
    con: duckdb.DuckDBPyConnection,
    registry: ModelRegistry,
    name: str,
    settings: ExperimentSettings,
    *,
    eval_id: str,
    model_id: str,
    joins: Sequence[str],
    n_events: int,
    work_dir: Path | None = None,
) -> Standing:
    """Score the evaluated bandit on that evaluation's events and compare with the baseline."""
    estimator = settings.apprentice.graduate.estimator
    estimate, low, high = _estimate(con, eval_id, estimator)
    keys = [j.eval_key for j in finished_joins(con, name) if j.join_id in set(joins)]
    with tempfile.TemporaryDirectory(prefix="cbloop-grad-", dir=work_dir) as tmp_name:
        tmp = Path(tmp_name)
        files = [local_file(registry.store, key, tmp) for key in keys]
        data = single_file(files, tmp / "eval.dsjson")
        logged = read_logged_events(data)
        model = registry.fetch(name, model_id, tmp)
        scores = score_file(data, model, settings.vw_arguments(), logged=logged, tmp_dir=tmp)
    ids = [str(e) for e in logged.event_id]
    rows = con.execute(
        "SELECT event_id, arg_min(baseline_action, ts), arg_min(p_max, ts) FROM decisions "
        "WHERE experiment = ? AND event_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY event_id",
        [name, ids],
    ).fetchall()
    found = {str(r[0]): (int(r[1]) - 1, float(r[2])) for r in rows}
    baseline = np.array([found.get(i, (0, 1.0))[0] for i in ids], dtype=np.int64)
    explored = sum(1 for i in ids if found.get(i, (0, 1.0))[1] < 1.0)
    greedy = np.array([int(np.argmax(scores.event_pmf(i))) for i in range(logged.n)])
    imitation = float(np.mean(greedy == baseline)) if logged.n else None
    target = (logged.logged_action == baseline).astype(np.float64)
    base_value: float | None = None
    base_low: float | None = None
    base_high: float | None = None
    if logged.n and target.any():
        est = SNIPS().estimate(
            BanditFeedback(
                reward=logged.reward,
                logged_probability=logged.logged_probability,
                target_probability=target,
            )
        )
        base_value, base_low, base_high = est.value, est.ci_low, est.ci_high
    return Standing(
        model_id=model_id,
        eval_id=eval_id,
        n_events=n_events,
        estimator=estimator,
        estimate=_finite(estimate),
        lower_bound=_finite(low),
        upper_bound=_finite(high),
        imitation_rate=imitation,
        baseline_value=_finite(base_value),
        baseline_low=_finite(base_low),
        baseline_high=_finite(base_high),
        explored_events=explored,
    )


def _record(
    con: duckdb.DuckDBPyConnection, experiment: str, standing: Standing, decision: Graduation
) -> None:
    con.execute(
        "INSERT INTO apprentice_assessments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            experiment,
            utcnow_naive(),
            standing.model_id,
            standing.eval_id,
            standing.n_events,
            standing.imitation_rate,
            standing.estimator,
            standing.estimate,
            standing.lower_bound,
            standing.baseline_value,
            decision.graduate,
            decision.reason,
            json.dumps(decision.evidence),
        ],
    )


def latest_assessment(con: duckdb.DuckDBPyConnection, experiment: str) -> dict[str, Any] | None:
    cursor = con.execute(
        "SELECT * FROM apprentice_assessments WHERE experiment = ? "
        "ORDER BY assessed_at DESC LIMIT 1",
        [experiment],
    )
    row = cursor.fetchone()
    if row is None:
        return None
    out = dict(zip([d[0] for d in cursor.description], row, strict=True))
    out["evidence"] = json.loads(out["evidence"])
    return out


def graduation_step(
    con: duckdb.DuckDBPyConnection,
    registry: ModelRegistry,
    name: str,
    settings: ExperimentSettings,
    switch: ModeSwitch | None = None,
    *,
    work_dir: Path | None = None,
) -> tuple[str, str]:
    """The loop's step for an apprentice experiment: (status, detail).

    A graduation goes to `switch` first (if any), then to the warehouse's `graduations`.
    """
    if effective_mode(con, name, settings) != "apprentice":
        return "skipped", f"mode is {effective_mode(con, name, settings)}, not apprentice"
    newest = _newest_evaluation(con, name)
    if newest is None:
        return "skipped", "no evaluation yet"
    eval_id, model_id, joins, n_events = newest
    if already_assessed(con, name, eval_id):
        return "skipped", f"evaluation {eval_id} already assessed"
    standing = measure_standing(
        con,
        registry,
        name,
        settings,
        eval_id=str(eval_id),
        model_id=str(model_id),
        joins=[str(j) for j in joins],
        n_events=int(n_events),
        work_dir=work_dir,
    )
    decision = assess_graduation(settings.apprentice, standing)
    if decision.graduate and settings.apprentice.graduate.enabled:
        if switch is not None:
            switch.switch_to_online(name, decision.evidence)
        WarehouseModeSwitch(con).switch_to_online(name, decision.evidence)
        _record(con, name, standing, decision)
        logger.info("%s graduated to online: %s", name, decision.reason)
        return "done", f"graduated to online: {decision.reason}"
    _record(con, name, standing, decision)
    verdict = "would graduate (graduate.enabled is false)" if decision.graduate else "stays"
    return "done", f"{verdict}: {decision.reason}"
