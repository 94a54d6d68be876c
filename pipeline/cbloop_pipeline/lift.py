"""Lift of the bandit over the control holdout, per period of constant holdout share, per
day and overall, with a sample-ratio check of the holdout's share.

Rewards are those the joins learned (rewarded or given the default reward), one per event
(an event id's first decision line counts). A period is a run of decisions, in time order,
logged with the same `holdout_share`; a share change starts a new period, and each period
is compared on its own, since a change of share while the reward drifts would otherwise
bias a pooled comparison.

Formulas (z = 1.96 for 95%):
- each group's mean reward m with standard error s / sqrt(n) (s: sample standard
  deviation, n - 1 in the denominator);
- absolute lift d = m_bandit - m_holdout, Welch's normal interval
  d +/- z sqrt(s_b^2 / n_b + s_h^2 / n_h);
- relative lift m_bandit / m_holdout - 1, delta-method interval: var(m_b / m_h) ~=
  var(m_b) / m_h^2 + m_b^2 var(m_h) / m_h^4 (undefined when m_h is 0);
- overall: the per-period figures combined with weights n_period / n (a stratified
  estimate; its variance is sum w^2 var), so a share change cannot bias it;
- sample-ratio check, per period: the units (distinct `unit_id`s, the holdout's
  assignment unit) held out against `share` x units, Pearson's chi-square with one degree
  of freedom, p = erfc(sqrt(chi2 / 2)); p < 0.001 is flagged as a mismatch.

The intervals treat events as independent: with a unit id shared by many events (a user
seen often) and rewards that depend on the user, they are too narrow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import duckdb

Z95 = 1.96
#: A sample-ratio p-value below this flags the holdout's share as off its setting.
SRM_ALPHA = 1e-3
METHOD = (
    "absolute: Welch normal interval of the difference of means; relative: delta method; "
    "overall: per-period figures weighted by their events; sample ratio: chi-square on units"
)


@dataclass(frozen=True)
class Group:
    decisions: int
    units: int
    learned: int
    reward_sum: float
    reward_sumsq: float

    @property
    def mean(self) -> float | None:
        return self.reward_sum / self.learned if self.learned else None

    @property
    def variance_of_mean(self) -> float | None:
        n = self.learned
        if n < 2:
            return None
        var = max((self.reward_sumsq - self.reward_sum**2 / n) / (n - 1), 0.0)
        return var / n

    def to_dict(self) -> dict[str, Any]:
        mean, var = self.mean, self.variance_of_mean
        half = None if var is None else Z95 * math.sqrt(var)
        return {
            "decisions": self.decisions,
            "units": self.units,
            "learned": self.learned,
            "mean_reward": mean,
            "ci_low": None if mean is None or half is None else mean - half,
            "ci_high": None if mean is None or half is None else mean + half,
        }


@dataclass(frozen=True)
class Lift:
    absolute: float | None
    absolute_var: float | None
    bandit_mean: float | None
    holdout_mean: float | None
    bandit_var: float | None
    holdout_var: float | None

    @staticmethod
    def of(bandit: Group, holdout: Group) -> Lift:
        mb, mh = bandit.mean, holdout.mean
        vb, vh = bandit.variance_of_mean, holdout.variance_of_mean
        diff = None if mb is None or mh is None else mb - mh
        var = None if vb is None or vh is None else vb + vh
        return Lift(diff, var, mb, mh, vb, vh)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "absolute": self.absolute,
            "absolute_low": None,
            "absolute_high": None,
            "relative": None,
            "relative_low": None,
            "relative_high": None,
        }
        if self.absolute is not None and self.absolute_var is not None:
            half = Z95 * math.sqrt(self.absolute_var)
            out["absolute_low"], out["absolute_high"] = self.absolute - half, self.absolute + half
        mb, mh = self.bandit_mean, self.holdout_mean
        if mb is not None and mh:
            out["relative"] = mb / mh - 1
            if self.bandit_var is not None and self.holdout_var is not None:
                var = self.bandit_var / mh**2 + mb**2 * self.holdout_var / mh**4
                half = Z95 * math.sqrt(var)
                out["relative_low"], out["relative_high"] = (
                    out["relative"] - half,
                    out["relative"] + half,
                )
        return out


def combine(parts: list[tuple[int, Lift]]) -> Lift:
    """Per-period lifts weighted by their number of learned events (stratified)."""
    usable = [(n, lift) for n, lift in parts if n > 0 and lift.absolute is not None]
    total = sum(n for n, _ in usable)
    if not usable or total == 0:
        return Lift(None, None, None, None, None, None)
    w = [(n / total, lift) for n, lift in usable]

    def weighted(get: str) -> float:
        return sum(wi * float(getattr(lift, get)) for wi, lift in w)

    def weighted_var(get: str) -> float | None:
        values = [getattr(lift, get) for _, lift in w]
        if any(v is None for v in values):
            return None
        return sum(wi**2 * float(v) for (wi, _), v in zip(w, values, strict=True))

    vb, vh = weighted_var("bandit_var"), weighted_var("holdout_var")
    return Lift(
        weighted("absolute"),
        None if vb is None or vh is None else vb + vh,
        weighted("bandit_mean"),
        weighted("holdout_mean"),
        vb,
        vh,
    )


def sample_ratio(share: float, units: int, held_units: int) -> dict[str, Any]:
    """Pearson's chi-square (1 df) of the held-out units against the configured share."""
    out: dict[str, Any] = {
        "expected_share": share,
        "observed_share": held_units / units if units else None,
        "units": units,
        "held_units": held_units,
        "p_value": None,
        "mismatch": False,
    }
    if units == 0 or not 0.0 < share < 1.0:
        return out
    expected_in, expected_out = share * units, (1 - share) * units
    chi2 = (held_units - expected_in) ** 2 / expected_in + (
        units - held_units - expected_out
    ) ** 2 / expected_out
    p = math.erfc(math.sqrt(chi2 / 2))
    out["p_value"] = p
    out["mismatch"] = p < SRM_ALPHA
    return out


# One row per (period, day, holdout) with sufficient statistics. A period changes where an
# event's share differs from the previous event's (in time order).
_STATS_SQL = """
WITH facts AS (
    SELECT event_id, min(ts) AS ts,
           arg_min(holdout, ts) AS holdout,
           arg_min(holdout_share, ts) AS share,
           arg_min(unit_id, ts) AS unit_id
    FROM decisions WHERE experiment = $experiment
    GROUP BY event_id
),
marked AS (
    SELECT *, CASE WHEN share IS DISTINCT FROM lag(share) OVER (ORDER BY ts, event_id)
                   THEN 1 ELSE 0 END AS starts
    FROM facts
),
periods AS (
    SELECT *, sum(starts) OVER (ORDER BY ts, event_id ROWS UNBOUNDED PRECEDING) AS period
    FROM marked
)
SELECT p.period, min(p.share) AS share, p.ts::DATE AS day, p.holdout,
       count(*) AS decisions, count(DISTINCT p.unit_id) AS units,
       count(j.reward) AS learned,
       coalesce(sum(j.reward), 0)::DOUBLE AS reward_sum,
       coalesce(sum(j.reward * j.reward), 0)::DOUBLE AS reward_sumsq,
       min(p.ts) AS first_ts, max(p.ts) AS last_ts
FROM periods p
LEFT JOIN joined_events j ON j.experiment = $experiment AND j.event_id = p.event_id
GROUP BY p.period, day, p.holdout
ORDER BY p.period, day, p.holdout
"""

# Units per period (a unit seen on several days counts once in its period).
_UNITS_SQL = """
WITH facts AS (
    SELECT event_id, min(ts) AS ts, arg_min(holdout, ts) AS holdout,
           arg_min(holdout_share, ts) AS share, arg_min(unit_id, ts) AS unit_id
    FROM decisions WHERE experiment = $experiment GROUP BY event_id
),
marked AS (
    SELECT *, CASE WHEN share IS DISTINCT FROM lag(share) OVER (ORDER BY ts, event_id)
                   THEN 1 ELSE 0 END AS starts
    FROM facts
),
periods AS (
    SELECT *, sum(starts) OVER (ORDER BY ts, event_id ROWS UNBOUNDED PRECEDING) AS period
    FROM marked
)
SELECT period, count(DISTINCT unit_id) AS units,
       count(DISTINCT unit_id) FILTER (WHERE holdout) AS held_units,
       count(*) AS decisions, count(*) FILTER (WHERE holdout) AS held_decisions
FROM periods GROUP BY period ORDER BY period
"""


def _group(row: dict[str, Any] | None) -> Group:
    if row is None:
        return Group(0, 0, 0, 0.0, 0.0)
    return Group(
        int(row["decisions"]),
        int(row["units"]),
        int(row["learned"]),
        float(row["reward_sum"]),
        float(row["reward_sumsq"]),
    )


def _add(a: Group, b: Group) -> Group:
    # Units are summed across days here; period unit counts come from _UNITS_SQL.
    return Group(
        a.decisions + b.decisions,
        a.units + b.units,
        a.learned + b.learned,
        a.reward_sum + b.reward_sum,
        a.reward_sumsq + b.reward_sumsq,
    )


def _iso(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _comparison(bandit: Group, holdout: Group) -> dict[str, Any]:
    return {
        "bandit": bandit.to_dict(),
        "holdout": holdout.to_dict(),
        "lift": Lift.of(bandit, holdout).to_dict(),
    }


def holdout_lift(con: duckdb.DuckDBPyConnection, experiment: str) -> dict[str, Any]:
    """The lift section of the report: periods, days and overall (see the module docstring).

    `configured` is False when no decision of the experiment was ever logged with a holdout
    share above 0.
    """
    cursor = con.execute(_STATS_SQL, {"experiment": experiment})
    names = [d[0] for d in cursor.description]
    rows = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    cursor = con.execute(_UNITS_SQL, {"experiment": experiment})
    unit_names = [d[0] for d in cursor.description]
    units = {int(r[0]): dict(zip(unit_names, r, strict=True)) for r in cursor.fetchall()}
    configured = any((r["share"] or 0.0) > 0.0 for r in rows)
    out: dict[str, Any] = {
        "configured": configured,
        "method": METHOD,
        "periods": [],
        "days": [],
        "overall": None,
    }
    if not configured:
        return out
    by_period: dict[int, dict[str, Any]] = {}
    cells: dict[tuple[int, Any], dict[bool, dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((int(r["period"]), r["day"]), {})[bool(r["holdout"])] = r
        p = by_period.setdefault(
            int(r["period"]),
            {"share": float(r["share"] or 0.0), "from": r["first_ts"], "to": r["last_ts"]},
        )
        p["from"], p["to"] = min(p["from"], r["first_ts"]), max(p["to"], r["last_ts"])
    totals: dict[int, tuple[Group, Group]] = {}
    for (period, day), groups in cells.items():
        bandit, held = _group(groups.get(False)), _group(groups.get(True))
        share = by_period[period]["share"]
        if share > 0:
            out["days"].append(
                {"day": _iso(day), "period": period, "share": share, **_comparison(bandit, held)}
            )
        b0, h0 = totals.get(period, (_group(None), _group(None)))
        totals[period] = (_add(b0, bandit), _add(h0, held))
    parts: list[tuple[int, Lift]] = []
    for period, info in sorted(by_period.items()):
        bandit, held = totals[period]
        u = units.get(period, {})
        bandit = Group(
            bandit.decisions,
            int(u.get("units", 0)) - int(u.get("held_units", 0)),
            bandit.learned,
            bandit.reward_sum,
            bandit.reward_sumsq,
        )
        held = Group(
            held.decisions,
            int(u.get("held_units", 0)),
            held.learned,
            held.reward_sum,
            held.reward_sumsq,
        )
        entry = {
            "period": period,
            "share": info["share"],
            "from": _iso(info["from"]),
            "to": _iso(info["to"]),
            **_comparison(bandit, held),
            "sample_ratio": sample_ratio(
                info["share"], int(u.get("units", 0)), int(u.get("held_units", 0))
            ),
        }
        out["periods"].append(entry)
        if info["share"] > 0:
            parts.append((bandit.learned + held.learned, Lift.of(bandit, held)))
    overall = combine(parts)
    out["overall"] = {
        "periods": len(parts),
        "bandit_mean_reward": overall.bandit_mean,
        "holdout_mean_reward": overall.holdout_mean,
        "lift": overall.to_dict(),
        "sample_ratio_mismatch": any(
            p["sample_ratio"]["mismatch"] for p in out["periods"] if p["share"] > 0
        ),
    }
    return out
