"""Health warnings, computed from a snapshot: each check returns zero or more warnings.

Thresholds are deliberately coarse (a dashboard should shout about real trouble, not noise):
a shift must be 4 standard errors wide, ESS must fall under a tenth of the events.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import duckdb

from cbloop.clock import parse_ts
from cbloop_pipeline.dashboard import queries
from cbloop_pipeline.dashboard.summary import PROPENSITY_FLOOR

#: A shift in reward rate (or a holdout share off its target) counts beyond this many
#: standard errors.
Z_ALARM = 4.0
MIN_EVENTS = 30
ESS_SHARE_FLOOR = 0.1
#: The share of logged propensities under the floor that is worth a warning.
FLOOR_SHARE = 0.01


@dataclass(frozen=True)
class HealthWarning:
    code: str
    level: str  # error | warning | info
    message: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def check(
    con: duckdb.DuckDBPyConnection,
    name: str,
    *,
    now: datetime,
    loop_period: float,
    holdout_share: float | None,
) -> list[HealthWarning]:
    """Every warning for one experiment, most severe first."""
    found = [
        *_loop(con, name, now, loop_period),
        *_propensities(con, name),
        *_ess(con, name),
        *_reward_shift(con, name),
        *_holdout(con, name, holdout_share),
        *_segments(con),
    ]
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(found, key=lambda w: order[w.level])


def _loop(
    con: duckdb.DuckDBPyConnection, name: str, now: datetime, period: float
) -> list[HealthWarning]:
    out: list[HealthWarning] = []
    st = queries.state(con, name)
    if st is None:
        return [
            HealthWarning("loop_never_ran", "info", "the learning loop has not run a cycle yet")
        ]
    if st["status"] == "failed":
        out.append(
            HealthWarning(
                "loop_failing",
                "error",
                f"cycle {st['cycle']} failed at step {st['step']}: {st.get('last_error') or ''}",
            )
        )
    failed = con.execute(
        "SELECT count(*) FROM (SELECT status FROM loop_steps WHERE experiment = ? "
        "ORDER BY finished_at DESC LIMIT 10) WHERE status = 'failed'",
        [name],
    ).fetchone()
    if failed and failed[0] >= 3 and st["status"] != "failed":
        out.append(
            HealthWarning("loop_flaky", "warning", f"{failed[0]} of the last 10 loop steps failed")
        )
    published = queries.meta(con).get("published_at")
    if published:
        age = (now - parse_ts(str(published)).replace(tzinfo=None)).total_seconds()
        if age > 3 * period:
            out.append(
                HealthWarning(
                    "snapshot_stale",
                    "warning",
                    f"no loop cycle published for {_duration(age)} (loop period "
                    f"{_duration(period)}): is `cbloop loop` running?",
                )
            )
    return out


def _propensities(con: duckdb.DuckDBPyConnection, name: str) -> list[HealthWarning]:
    row = con.execute(
        "SELECT decisions, invalid, below_floor, min_p FROM dash_propensity WHERE experiment = ?",
        [name],
    ).fetchone()
    if row is None:
        return []
    decisions, invalid, below, min_p = row
    out: list[HealthWarning] = []
    if invalid:
        out.append(
            HealthWarning(
                "propensity_out_of_range",
                "error",
                f"{invalid} decisions logged a probability outside (0, 1]",
            )
        )
    if decisions and below / decisions > FLOOR_SHARE:
        out.append(
            HealthWarning(
                "propensity_tiny",
                "warning",
                f"{below} decisions ({below / decisions:.1%}) logged a probability under "
                f"{PROPENSITY_FLOOR:g} (smallest {min_p:.2g}): off-policy estimates rest on few "
                "events",
            )
        )
    return out


def _ess(con: duckdb.DuckDBPyConnection, name: str) -> list[HealthWarning]:
    rows = con.execute(
        "SELECT effective_sample_size, n_events FROM evaluations "
        "WHERE experiment = ? AND effective_sample_size IS NOT NULL ORDER BY created_at",
        [name],
    ).fetchall()
    if not rows:
        return []
    ess, n = rows[-1]
    out: list[HealthWarning] = []
    if n and ess / n < ESS_SHARE_FLOOR:
        out.append(
            HealthWarning(
                "ess_collapsing",
                "warning",
                f"latest evaluation: effective sample size {ess:.0f} of {n} events "
                f"({ess / n:.1%}); the candidate differs too much from the logging policy",
            )
        )
    elif len(rows) >= 3:
        earlier = sorted(r[0] for r in rows[:-1])
        median = earlier[len(earlier) // 2]
        if median > 0 and ess < median / 4:
            out.append(
                HealthWarning(
                    "ess_collapsing",
                    "warning",
                    f"effective sample size fell to {ess:.0f} from a median of {median:.0f}",
                )
            )
    return out


def _reward_shift(con: duckdb.DuckDBPyConnection, name: str) -> list[HealthWarning]:
    """Newest third of the series against the rest, as a two-sample z statistic."""
    rows = con.execute(
        "SELECT learned, reward_sum, reward_sumsq FROM dash_series "
        "WHERE experiment = ? AND learned > 0 ORDER BY bucket",
        [name],
    ).fetchall()
    if len(rows) < 3:
        return []
    cut = len(rows) - max(1, len(rows) // 3)
    before = [sum(r[i] for r in rows[:cut]) for i in range(3)]
    after = [sum(r[i] for r in rows[cut:]) for i in range(3)]
    a = queries.interval(int(before[0]), before[1], before[2])
    b = queries.interval(int(after[0]), after[1], after[2])
    if a["n"] < MIN_EVENTS or b["n"] < MIN_EVENTS or a["low"] is None or b["low"] is None:
        return []
    se = math.hypot((a["high"] - a["low"]) / 3.92, (b["high"] - b["low"]) / 3.92)
    diff = b["mean"] - a["mean"]
    if se == 0 or abs(diff) / se < Z_ALARM:
        return []
    direction = "fell" if diff < 0 else "rose"
    return [
        HealthWarning(
            "reward_shift",
            "warning" if diff < 0 else "info",
            f"reward rate {direction} sharply: {a['mean']:.3f} before, {b['mean']:.3f} in the "
            f"newest third of the series ({abs(diff) / se:.1f} standard errors)",
        )
    ]


def _holdout(
    con: duckdb.DuckDBPyConnection, name: str, configured: float | None
) -> list[HealthWarning]:
    lift = queries.holdout(con, name)
    if not lift["configured"] or configured is None:
        return []
    n = lift["holdout_decisions"] + lift["policy_decisions"]
    share = lift["holdout_share"]
    if not n or share is None:
        return []
    se = math.sqrt(configured * (1 - configured) / n) if 0 < configured < 1 else 0.0
    if (se == 0 and share != configured) or (se > 0 and abs(share - configured) / se > Z_ALARM):
        return [
            HealthWarning(
                "holdout_share_off",
                "warning",
                f"holdout share {share:.2%} of {n} decisions, configured {configured:.2%}",
            )
        ]
    return []


def _segments(con: duckdb.DuckDBPyConnection) -> list[HealthWarning]:
    m = queries.meta(con)
    out: list[HealthWarning] = []
    if m.get("waiting_ship"):
        out.append(
            HealthWarning(
                "segments_waiting_to_ship",
                "warning",
                f"{m['waiting_ship']} closed segments in the local spool are not shipped yet",
            )
        )
    if m.get("waiting_ingest"):
        out.append(
            HealthWarning(
                "segments_waiting_to_ingest",
                "info",
                f"{m['waiting_ingest']} closed segments were waiting for the next ingest",
            )
        )
    return out


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def as_dicts(warnings: list[HealthWarning]) -> list[dict[str, Any]]:
    return [w.to_dict() for w in warnings]
