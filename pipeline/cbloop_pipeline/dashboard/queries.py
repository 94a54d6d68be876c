"""What each page shows, read from a snapshot: plain JSON-ready dicts, one function per page.

Times are ISO 8601 UTC strings with a Z (the browser shows them in the viewer's zone); means
come with normal-approximation 95% intervals, as in the report views (migration 0007).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import duckdb
import orjson

from cbloop.clock import format_ts
from cbloop.errors import InvalidInput
from cbloop_pipeline.dashboard.summary import DELAY_BINS

Row = dict[str, Any]
Z95 = 1.96


class UnknownExperiment(InvalidInput):
    """No such experiment in the settings or the snapshot."""


class UnknownModel(InvalidInput):
    """No such model of the experiment in the snapshot."""


def interval(n: int, s: float, ss: float) -> Row:
    """Mean of n values with sum s and sum of squares ss, and its 95% interval."""
    if n <= 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    mean = s / n
    if n < 2:
        return {"n": n, "mean": mean, "low": None, "high": None}
    half = Z95 * math.sqrt(max((ss - s * s / n) / (n - 1), 0.0) / n)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}


def iso(value: Any) -> Any:
    """Datetimes as ISO UTC strings; non-finite floats as None; others unchanged."""
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[Row]:
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description]
    return [{k: iso(v) for k, v in zip(names, row, strict=True)} for row in cursor.fetchall()]


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> Row | None:
    rows = _rows(con, sql, params)
    return rows[0] if rows else None


def meta(con: duckdb.DuckDBPyConnection) -> Row:
    row = _one(con, "SELECT * FROM dash_meta")
    return row or {}


def experiment_names(con: duckdb.DuckDBPyConnection, configured: Sequence[str]) -> list[str]:
    """Configured experiments first, then any the warehouse knows that config no longer has."""
    found = [
        str(r["experiment"])
        for r in _rows(
            con,
            "SELECT experiment FROM experiment_state UNION SELECT name FROM experiments "
            "UNION SELECT DISTINCT experiment FROM dash_models ORDER BY 1",
        )
    ]
    return list(configured) + [n for n in found if n not in configured]


def state(con: duckdb.DuckDBPyConnection, name: str) -> Row | None:
    return _one(con, "SELECT * FROM experiment_state WHERE experiment = ?", [name])


def serving_model(con: duckdb.DuckDBPyConnection, name: str) -> str | None:
    st = state(con, name)
    if st and st.get("deployed_model_id"):
        return str(st["deployed_model_id"])
    row = _one(
        con,
        "SELECT model_id FROM models WHERE experiment = ? AND state = 'deployed' "
        "ORDER BY created_at DESC LIMIT 1",
        [name],
    )
    return str(row["model_id"]) if row else None


def last_day(con: duckdb.DuckDBPyConnection, name: str) -> Row:
    row = _one(con, "SELECT * FROM dash_day WHERE experiment = ?", [name])
    if row is None:
        return {"decisions": 0, "reward": interval(0, 0.0, 0.0)}
    return {
        "decisions": row["decisions"],
        "reward": interval(row["learned"], row["reward_sum"], row["reward_sumsq"]),
    }


def series(con: duckdb.DuckDBPyConnection, name: str) -> Row:
    """Decisions, reward rate and exploration share per time bucket."""
    width = _one(con, "SELECT width_seconds FROM dash_buckets WHERE experiment = ?", [name])
    rows = _rows(con, "SELECT * FROM dash_series WHERE experiment = ? ORDER BY bucket", [name])
    points = []
    for r in rows:
        reward = interval(r["learned"], r["reward_sum"], r["reward_sumsq"])
        points.append(
            {
                "t": r["bucket"],
                "decisions": r["decisions"],
                "learned": r["learned"],
                "reward": reward["mean"],
                "reward_low": reward["low"],
                "reward_high": reward["high"],
                "explored_share": r["explored"] / r["decisions"] if r["decisions"] else None,
            }
        )
    return {"width_seconds": width["width_seconds"] if width else None, "points": points}


def by_model(con: duckdb.DuckDBPyConnection, name: str) -> list[Row]:
    """Online reward rate of every model that served, in the order they first served."""
    rows = _rows(con, "SELECT * FROM dash_models WHERE experiment = ? ORDER BY first_ts", [name])
    out = []
    for r in rows:
        reward = interval(r["learned"], r["reward_sum"], r["reward_sumsq"])
        out.append(
            {
                "model_id": r["model_id"],
                "first_ts": r["first_ts"],
                "last_ts": r["last_ts"],
                "decisions": r["decisions"],
                "learned": r["learned"],
                "explored_share": r["explored"] / r["decisions"] if r["decisions"] else None,
                **{f"reward_{k}": v for k, v in reward.items()},
            }
        )
    return out


def timeline(con: duckdb.DuckDBPyConnection, name: str) -> list[Row]:
    """Deploys, refusals (not promoted, or refused by the service) and rollbacks, by time."""
    events = _rows(
        con,
        """
        SELECT decided_at AS at,
               CASE WHEN action = 'rollback' THEN 'rollback'
                    WHEN promoted THEN 'deploy' ELSE 'not promoted' END AS kind,
               model_id, previous_model_id, forced, estimator, candidate_value,
               deployed_value, reason
        FROM deployment_decisions WHERE experiment = ?
        """,
        [name],
    )
    for r in _rows(
        con,
        "SELECT model_id, metadata, created_at FROM models "
        "WHERE experiment = ? AND state = 'refused'",
        [name],
    ):
        detail = orjson.loads(r["metadata"])
        refusal: Row = next(
            (h for h in reversed(detail.get("history", [])) if "refus" in str(h.get("what"))),
            {},
        )
        events.append(
            {
                "at": refusal.get("at", r["created_at"]),
                "kind": "refused by service",
                "model_id": r["model_id"],
                "previous_model_id": None,
                "forced": False,
                "estimator": None,
                "candidate_value": None,
                "deployed_value": None,
                "reason": str(refusal.get("reason") or refusal.get("detail") or "refused"),
            }
        )
    return sorted(events, key=lambda e: str(e["at"]))


def offline_vs_online(con: duckdb.DuckDBPyConnection, name: str) -> list[Row]:
    """Each served model's offline estimate (its newest evaluation as a candidate made
    before it first served) next to the reward it then earned online."""
    rows = _rows(
        con,
        """
        WITH est AS (
            SELECT e.model_id, e.eval_id, e.created_at, e.primary_estimator, x.value,
                   x.ci_low, x.ci_high, x.n
            FROM evaluations e
            JOIN evaluation_estimates x
              ON x.eval_id = e.eval_id AND x.policy = 'candidate'
             AND x.estimator = e.primary_estimator
            WHERE e.experiment = ?
        )
        SELECT m.model_id, m.first_ts, m.learned, m.reward_sum, m.reward_sumsq,
               arg_max(est.eval_id, est.created_at) AS eval_id,
               arg_max(est.primary_estimator, est.created_at) AS estimator,
               arg_max(est.value, est.created_at) AS estimate,
               arg_max(est.ci_low, est.created_at) AS estimate_low,
               arg_max(est.ci_high, est.created_at) AS estimate_high
        FROM dash_models m
        JOIN est ON est.model_id = m.model_id AND est.created_at <= m.first_ts
        WHERE m.experiment = ?
        GROUP BY ALL ORDER BY m.first_ts
        """,
        [name, name],
    )
    out = []
    for r in rows:
        online = interval(r.pop("learned"), r.pop("reward_sum"), r.pop("reward_sumsq"))
        r.update({f"online_{k}": v for k, v in online.items()})
        if (
            r["online_mean"] is not None
            and r["estimate_low"] is not None
            and r["estimate_high"] is not None
        ):
            r["covered"] = bool(r["estimate_low"] <= r["online_mean"] <= r["estimate_high"])
        else:
            r["covered"] = None
        out.append(r)
    return out


def holdout(con: duckdb.DuckDBPyConnection, name: str) -> Row:
    """Lift of the policy over the holdout group, with its 95% interval, if holdout exists."""
    m = meta(con)
    rows = {
        bool(r["holdout"]): r
        for r in _rows(con, "SELECT * FROM dash_holdout WHERE experiment = ?", [name])
    }
    if not m.get("holdout_recorded") or True not in rows:
        return {"configured": False}
    held, served = rows[True], rows.get(False)
    h = interval(held["learned"], held["reward_sum"], held["reward_sumsq"])
    p = (
        interval(served["learned"], served["reward_sum"], served["reward_sumsq"])
        if served
        else interval(0, 0.0, 0.0)
    )
    total = held["decisions"] + (served["decisions"] if served else 0)
    out: Row = {
        "configured": True,
        "holdout_decisions": held["decisions"],
        "policy_decisions": served["decisions"] if served else 0,
        "holdout_share": held["decisions"] / total if total else None,
        "holdout": h,
        "policy": p,
        "lift": None,
        "lift_low": None,
        "lift_high": None,
    }
    if h["mean"] is not None and p["mean"] is not None:
        out["lift"] = p["mean"] - h["mean"]
        if None not in (h["low"], p["low"]):
            se = math.hypot((p["high"] - p["low"]) / 2, (h["high"] - h["low"]) / 2)
            out["lift_low"], out["lift_high"] = out["lift"] - se, out["lift"] + se
    return out


def ope_series(con: duckdb.DuckDBPyConnection, name: str) -> list[Row]:
    """Effective sample size and largest importance weight of every evaluation, by time."""
    return _rows(
        con,
        """
        SELECT created_at AS t, eval_id, model_id, n_events,
               effective_sample_size AS ess, max_importance_weight AS max_weight
        FROM evaluations WHERE experiment = ? ORDER BY created_at
        """,
        [name],
    )


def delays(con: duckdb.DuckDBPyConnection, name: str) -> list[Row]:
    counts = {
        int(r["bin"]): int(r["rewards"])
        for r in _rows(con, "SELECT bin, rewards FROM dash_delay WHERE experiment = ?", [name])
    }
    if not counts:
        return []
    return [{"bin": label, "rewards": counts.get(i, 0)} for i, (label, _) in enumerate(DELAY_BINS)]


def unused_rewards(con: duckdb.DuckDBPyConnection, name: str) -> Row:
    """Rewards not learned from, by reason; orphans and quarantined lines are global."""
    by_reason = {
        str(r["reason"]): int(r["rewards"])
        for r in _rows(con, "SELECT reason, rewards FROM dash_unused WHERE experiment = ?", [name])
    }
    orphans = _one(
        con,
        "SELECT coalesce(sum(rewards), 0)::BIGINT AS n FROM dash_unused WHERE reason = 'orphan'",
    )
    return {
        "late": by_reason.get("after_window", 0) + by_reason.get("after_join", 0),
        "by_reason": by_reason,
        "orphan_all_experiments": int(orphans["n"]) if orphans else 0,
        "quarantined_lines": int(meta(con).get("quarantined_lines") or 0),
    }


def recent_steps(con: duckdb.DuckDBPyConnection, name: str, limit: int = 10) -> list[Row]:
    return _rows(
        con,
        "SELECT cycle, step, status, started_at, finished_at, detail FROM loop_steps "
        "WHERE experiment = ? ORDER BY finished_at DESC LIMIT ?",
        [name, limit],
    )


def models(con: duckdb.DuckDBPyConnection, name: str) -> list[Row]:
    return _rows(
        con,
        "SELECT model_id, parent_id, state, created_at, events_trained, events_total, "
        "progressive_loss, last_eval_id FROM models WHERE experiment = ? ORDER BY created_at",
        [name],
    )


def model_detail(con: duckdb.DuckDBPyConnection, name: str, model_id: str) -> Row:
    """Lineage, data seen, evaluations and promotion decisions of one model."""
    row = _one(con, "SELECT * FROM models WHERE experiment = ? AND model_id = ?", [name, model_id])
    if row is None:
        raise UnknownModel(f"no model {model_id!r} in experiment {name!r}")
    metadata = orjson.loads(row.pop("metadata"))
    lineage: list[Row] = []
    parent, seen = row.get("parent_id"), {model_id}
    while parent and parent not in seen:
        seen.add(parent)
        up = _one(
            con,
            "SELECT model_id, parent_id, state, created_at, events_trained FROM models "
            "WHERE experiment = ? AND model_id = ?",
            [name, parent],
        )
        if up is None:
            lineage.append({"model_id": parent, "missing": True})
            break
        lineage.append(up)
        parent = up.get("parent_id")
    children = _rows(
        con,
        "SELECT model_id, state, created_at FROM models WHERE experiment = ? AND parent_id = ? "
        "ORDER BY created_at",
        [name, model_id],
    )
    evaluations = _rows(
        con,
        """
        SELECT e.eval_id, e.created_at, e.n_events, e.primary_estimator, e.deployed_model_id,
               x.policy, x.model_id AS policy_model_id, x.estimator, x.value, x.ci_low,
               x.ci_high, x.ess, x.max_weight
        FROM evaluations e JOIN evaluation_estimates x USING (eval_id)
        WHERE e.experiment = ? AND e.model_id = ?
        ORDER BY e.created_at, x.policy, x.estimator
        """,
        [name, model_id],
    )
    decisions = _rows(
        con,
        "SELECT decided_at, action, promoted, forced, eval_id, estimator, candidate_value, "
        "deployed_value, margin, use_lower_bound, n_events, previous_model_id, reason "
        "FROM deployment_decisions WHERE experiment = ? AND model_id = ? ORDER BY decided_at",
        [name, model_id],
    )
    online = next((m for m in by_model(con, name) if m["model_id"] == model_id), None)
    return {
        "experiment": name,
        "model": row,
        "lineage": lineage,
        "children": children,
        "joins": list(metadata.get("joins") or row.get("joins") or []),
        "history": metadata.get("history", []),
        "evaluations": evaluations,
        "decisions": decisions,
        "online": online,
    }
