"""Chart specifications: what the browser draws and the table printed under each chart.

A spec is JSON: `{id, title, kind: line | interval | bar, x: time | category, y_label,
series: [{name, points: [{x, y, low?, high?}]}]}`. The page embeds it (so the chart draws
without another request, and a static snapshot works from disk) and the JSON API serves the
same object at `/api/experiments/<name>/charts/<id>`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb

from cbloop_pipeline.dashboard import queries

Spec = dict[str, Any]


def _spec(  # noqa: PLR0917
    chart_id: str, title: str, kind: str, x: str, y_label: str, series: list[Spec]
) -> Spec:
    return {
        "id": chart_id,
        "title": title,
        "kind": kind,
        "x": x,
        "y_label": y_label,
        "series": series,
    }


def _short(model_id: str | None) -> str:
    """Model ids end in a random tag (`m-<time>-<hex>`): the tag names a model on an axis."""
    if not model_id:
        return "-"
    tag = model_id.rsplit("-", 1)[-1]
    return model_id if len(model_id) <= 10 or len(tag) < 4 else "…" + tag


def traffic(con: duckdb.DuckDBPyConnection, name: str) -> Spec:
    s = queries.series(con, name)
    pts = s["points"]
    return _spec(
        "traffic",
        f"Decisions and rewards learned per {_width(s['width_seconds'])}",
        "line",
        "time",
        "events",
        [
            {"name": "decisions", "points": [{"x": p["t"], "y": p["decisions"]} for p in pts]},
            {"name": "rewards learned", "points": [{"x": p["t"], "y": p["learned"]} for p in pts]},
        ],
    )


def reward_over_time(con: duckdb.DuckDBPyConnection, name: str) -> Spec:
    s = queries.series(con, name)
    points = [
        {"x": p["t"], "y": p["reward"], "low": p["reward_low"], "high": p["reward_high"]}
        for p in s["points"]
        if p["reward"] is not None
    ]
    return _spec(
        "reward_over_time",
        f"Reward rate per {_width(s['width_seconds'])} (95% interval)",
        "line",
        "time",
        "mean reward",
        [{"name": "reward rate", "points": points}],
    )


def reward_by_model(con: duckdb.DuckDBPyConnection, name: str) -> Spec:
    points = [
        {
            "x": _short(m["model_id"]),
            "y": m["reward_mean"],
            "low": m["reward_low"],
            "high": m["reward_high"],
            "n": m["learned"],
        }
        for m in queries.by_model(con, name)
        if m["reward_mean"] is not None
    ]
    return _spec(
        "reward_by_model",
        "Online reward rate per serving model (95% interval)",
        "interval",
        "category",
        "mean reward",
        [{"name": "online reward", "points": points}],
    )


def offline_online(con: duckdb.DuckDBPyConnection, name: str) -> Spec:
    rows = queries.offline_vs_online(con, name)
    offline = [
        {
            "x": _short(r["model_id"]),
            "y": r["estimate"],
            "low": r["estimate_low"],
            "high": r["estimate_high"],
        }
        for r in rows
        if r["estimate"] is not None
    ]
    online = [
        {
            "x": _short(r["model_id"]),
            "y": r["online_mean"],
            "low": r["online_low"],
            "high": r["online_high"],
        }
        for r in rows
        if r["online_mean"] is not None
    ]
    return _spec(
        "offline_online",
        "Offline estimate before serving, and the reward then earned online",
        "interval",
        "category",
        "reward",
        [{"name": "offline estimate", "points": offline}, {"name": "online", "points": online}],
    )


def lift(con: duckdb.DuckDBPyConnection, name: str) -> Spec:
    h = queries.holdout(con, name)
    points = []
    if h["configured"] and h["lift"] is not None:
        points = [
            {"x": "policy - holdout", "y": h["lift"], "low": h["lift_low"], "high": h["lift_high"]}
        ]
    return _spec(
        "lift",
        "Lift over the holdout (95% interval)",
        "interval",
        "category",
        "reward lift",
        [{"name": "lift", "points": points}],
    )


def exploration(con: duckdb.DuckDBPyConnection, name: str) -> Spec:
    s = queries.series(con, name)
    return _spec(
        "exploration",
        "Exploration share (chosen action was not the policy's top pick)",
        "line",
        "time",
        "share",
        [
            {
                "name": "explored",
                "points": [
                    {"x": p["t"], "y": p["explored_share"]}
                    for p in s["points"]
                    if p["explored_share"] is not None
                ],
            }
        ],
    )


def ess(con: duckdb.DuckDBPyConnection, name: str) -> Spec:
    rows = queries.ope_series(con, name)
    return _spec(
        "ess",
        "Effective sample size of each evaluation (and its events)",
        "line",
        "time",
        "events",
        [
            {
                "name": "ESS",
                "points": [{"x": r["t"], "y": r["ess"]} for r in rows if r["ess"] is not None],
            },
            {"name": "eval events", "points": [{"x": r["t"], "y": r["n_events"]} for r in rows]},
        ],
    )


def max_weight(con: duckdb.DuckDBPyConnection, name: str) -> Spec:
    rows = queries.ope_series(con, name)
    return _spec(
        "max_weight",
        "Largest importance weight of each evaluation",
        "line",
        "time",
        "weight",
        [
            {
                "name": "largest weight",
                "points": [
                    {"x": r["t"], "y": r["max_weight"]} for r in rows if r["max_weight"] is not None
                ],
            }
        ],
    )


def delay(con: duckdb.DuckDBPyConnection, name: str) -> Spec:
    return _spec(
        "delay",
        "Reward delay after the decision",
        "bar",
        "category",
        "rewards",
        [
            {
                "name": "rewards",
                "points": [{"x": d["bin"], "y": d["rewards"]} for d in queries.delays(con, name)],
            }
        ],
    )


EXPERIMENT_CHARTS: dict[str, Callable[[duckdb.DuckDBPyConnection, str], Spec]] = {
    "traffic": traffic,
    "reward_over_time": reward_over_time,
    "reward_by_model": reward_by_model,
    "offline_online": offline_online,
    "lift": lift,
    "exploration": exploration,
    "ess": ess,
    "max_weight": max_weight,
    "delay": delay,
}


def model_estimates(detail: dict[str, Any]) -> Spec:
    """The model's newest evaluation: each policy's primary estimate with its interval."""
    evals = detail["evaluations"]
    if not evals:
        points: list[Spec] = []
    else:
        newest = evals[-1]["eval_id"]
        points = [
            {
                "x": f"{e['policy']} {_short(e['policy_model_id'])}".strip(),
                "y": e["value"],
                "low": e["ci_low"],
                "high": e["ci_high"],
            }
            for e in evals
            if e["eval_id"] == newest
            and e["estimator"] == e["primary_estimator"]
            and e["value"] is not None
        ]
    return _spec(
        "estimates",
        "Newest evaluation: primary estimate per policy (95% interval)",
        "interval",
        "category",
        "estimated reward",
        [{"name": "estimate", "points": points}],
    )


def _width(seconds: int | None) -> str:
    if not seconds:
        return "bucket"
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            n = seconds // size
            return unit if n == 1 else f"{n} {unit}"
    return f"{seconds} s"
