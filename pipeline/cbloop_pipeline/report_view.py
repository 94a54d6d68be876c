"""The report as a person reads it: a table that fits the terminal, counts, and a legend.

The views have fifteen columns; a terminal rarely fits them at full names. The table shows
short headings, merges the mean reward and its interval into one cell, shortens model ids, and
drops the least important columns while it does not fit `width`. Below a usable width it turns
vertical: one block of `heading: value` lines per row. The legend under it says what every
heading means, so the short names need no guessing.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    heading: str
    meaning: str
    cell: Callable[[Row], str]
    #: Lower goes first when the table must lose columns to fit.
    priority: int
    text: bool = False


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.0f}%"


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if isinstance(value, datetime) else _num(value)


def short_model(model_id: Any) -> str:
    """`m-20261202T181040-3fa9c1` -> `…3fa9c1`: the random tail tells models apart."""
    text = "-" if model_id is None else str(model_id)
    return text if len(text) <= 9 else "…" + text[-6:]


def _reward(row: Row) -> str:
    mean, low, high = (
        row.get("mean_reward"),
        row.get("mean_reward_low"),
        row.get("mean_reward_high"),
    )
    if mean is None:
        return "-"
    if low is None or high is None:
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


COLUMNS: dict[str, Column] = {
    c.heading: c
    for c in (
        Column(
            "hour", "hour (UTC) the decisions were made in", lambda r: _when(r["hour"]), 9, True
        ),
        Column(
            "from", "first hour (UTC) with decisions", lambda r: _when(r["first_hour"]), 4, True
        ),
        Column("to", "last hour (UTC) with decisions", lambda r: _when(r["last_hour"]), 3, True),
        Column(
            "model",
            "model that made the decisions (id shortened to its last characters)",
            lambda r: short_model(r["model_id"]),
            9,
            True,
        ),
        Column("models", "models that made decisions", lambda r: _num(r["models"]), 2),
        Column("decisions", "decisions logged", lambda r: _num(r["decisions"]), 8),
        Column(
            "closed",
            "decisions whose reward window closed and were joined",
            lambda r: _num(r["closed"]),
            5,
        ),
        Column(
            "rewarded%",
            "share of closed decisions that got a reward in their window",
            lambda r: _pct(r["share_rewarded"]),
            6,
        ),
        Column(
            "learned",
            "joined decisions with a label to learn from (rewarded or default reward)",
            lambda r: _num(r["learned"]),
            2,
        ),
        Column(
            "reward [95% CI]",
            "mean reward over learned decisions, with its 95% interval (none below 2)",
            _reward,
            7,
        ),
        Column(
            "explored%",
            "share of decisions where the policy picked an action it gave less than the most "
            "probability (exploration)",
            lambda r: _pct(r["share_explored"]),
            4,
        ),
        Column(
            "mean p",
            "mean logged probability of the chosen action",
            lambda r: _num(r["mean_probability"]),
            1,
        ),
        Column(
            "late",
            "rewards that came after the window closed or after the decision was joined",
            lambda r: _num(r["late_rewards"]),
            3,
        ),
    )
}

_LAYOUT: dict[str, list[str]] = {
    "hour": ["hour", "model"],
    "model": ["model", "from", "to"],
    "experiment": ["models", "from", "to"],
}
_FIGURES = [
    "decisions",
    "closed",
    "rewarded%",
    "learned",
    "reward [95% CI]",
    "explored%",
    "mean p",
    "late",
]
#: Narrower than this and even the essential columns do not fit: lay the rows out vertically.
MIN_TABLE_WIDTH = 60


def columns_for(by: str) -> list[Column]:
    return [COLUMNS[h] for h in (*_LAYOUT[by], *_FIGURES)]


def render_rows(title: str, by: str, rows: list[Row], width: int) -> str:
    """The rows as a table that fits `width` characters, or vertically when it cannot."""
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    every = columns_for(by)
    shown = list(every)
    # Rich would squeeze a wide table by wrapping cells, and a figure split over two lines
    # reads badly: columns go instead, least important first, while a few remain.
    while _natural_width(console, title, shown, rows) > width and len(shown) > 4:
        shown.remove(min(shown, key=lambda c: c.priority))
    if width < MIN_TABLE_WIDTH or _natural_width(console, title, shown, rows) > width:
        return _vertical(title, every, rows)
    console.print(_table(title, shown, rows))
    text = console.export_text().rstrip("\n")
    dropped = [c.heading for c in every if c not in shown]
    if dropped:
        note = f"(not shown, the terminal is too narrow: {', '.join(dropped)}; see --format json)"
        text += "\n" + textwrap.fill(note, width)
    return text


def _natural_width(console: Console, title: str, columns: list[Column], rows: list[Row]) -> int:
    wide = console.options.update(width=10_000, max_width=10_000)
    return Measurement.get(console, wide, _table(title, columns, rows)).maximum


def _table(title: str, columns: list[Column], rows: list[Row]) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col.heading, justify="left" if col.text else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(col.cell(row) for col in columns))
    return table


def _vertical(title: str, columns: list[Column], rows: list[Row]) -> str:
    pad = max(len(c.heading) for c in columns)
    blocks = [title]
    for row in rows:
        blocks.append("\n".join(f"{c.heading:>{pad}}: {c.cell(row)}" for c in columns))
    return "\n\n".join(blocks)


def legend(by: str) -> str:
    lines = ["columns:"]
    for col in columns_for(by):
        lines.append(f"  {col.heading:<16} {col.meaning}")
    return "\n".join(lines)


# -- lift over the holdout, and the apprentice's standing ---------------------------------


def _signed(value: Any) -> str:
    return "-" if value is None else f"{value:+.3f}"


def _signed_pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:+.1f}%"


def _interval(low: Any, high: Any, fmt: Callable[[Any], str]) -> str:
    return "" if low is None or high is None else f" [{fmt(low)}, {fmt(high)}]"


def _lift_text(lift: Row) -> str:
    absolute = _signed(lift["absolute"]) + _interval(
        lift["absolute_low"], lift["absolute_high"], _signed
    )
    relative = _signed_pct(lift["relative"]) + _interval(
        lift["relative_low"], lift["relative_high"], _signed_pct
    )
    return f"lift {absolute}, relative {relative}"


def _comparison_text(entry: Row) -> str:
    b, h = entry["bandit"], entry["holdout"]
    return (
        f"bandit {_num(b['mean_reward'])} (n {b['learned']}) vs holdout "
        f"{_num(h['mean_reward'])} (n {h['learned']}): {_lift_text(entry['lift'])}"
    )


def _ratio_text(check: Row) -> str:
    if check["p_value"] is None:
        return "sample ratio: -"
    verdict = "MISMATCH (p < 0.001)" if check["mismatch"] else "ok"
    return (
        f"sample ratio: {_pct(check['observed_share'])} of {check['units']} units held out "
        f"(set {_pct(check['expected_share'])}), p = {check['p_value']:.3g}: {verdict}"
    )


def _minute(iso: Any) -> str:
    """'2026-12-03T07:41:59.123456' -> '2026-12-03 07:41'."""
    return "-" if iso is None else str(iso)[:16].replace("T", " ")


def render_lift(lift: Row, width: int) -> str:
    """The lift section: per period of constant share (and its days), then overall."""
    if not lift.get("configured"):
        return "lift over the holdout: no holdout configured (holdout.share is 0)"
    lines = ["lift over the holdout (bandit minus holdout mean reward, 95% intervals):"]
    for period in lift["periods"]:
        if period["share"] <= 0:
            lines.append(
                f"  period {period['period']} (no holdout): {_minute(period['from'])} .. "
                f"{_minute(period['to'])}"
            )
            continue
        lines.append(
            f"  period {period['period']} (holdout share {_pct(period['share'])}, "
            f"{_minute(period['from'])} .. {_minute(period['to'])}): "
            f"{_comparison_text(period)}; "
            f"{_ratio_text(period['sample_ratio'])}"
        )
        for day in lift["days"]:
            if day["period"] == period["period"]:
                lines.append(f"    {day['day']}: {_comparison_text(day)}")
    overall = lift["overall"]
    mismatch = "; sample ratio MISMATCH in a period" if overall["sample_ratio_mismatch"] else ""
    lines.append(
        f"  overall ({overall['periods']} period(s)): bandit "
        f"{_num(overall['bandit_mean_reward'])} vs holdout "
        f"{_num(overall['holdout_mean_reward'])}: {_lift_text(overall['lift'])}{mismatch}"
    )
    lines.append(textwrap.fill(f"  ({lift['method']})", width, subsequent_indent="   "))
    return "\n".join(
        textwrap.fill(line, width, subsequent_indent="      ") if len(line) > width else line
        for line in lines
    )


def render_apprentice(standing: Row | None, width: int = 100) -> str | None:
    """The newest apprentice assessment: imitation, value against the baseline, graduation."""
    if standing is None:
        return None
    parts = [
        f"apprentice: bandit {short_model(standing['model_id'])} imitates the baseline on "
        f"{_pct(standing['imitation_rate'])} of {standing['n_events']} eval events; "
        f"its {standing['estimator']} estimate {_num(standing['estimate'])} "
        f"(lower bound {_num(standing['lower_bound'])}) vs the baseline's "
        f"{_num(standing['baseline_value'])}",
        f"  graduation: {'yes' if standing['graduate'] else 'no'} ({standing['reason']})",
    ]
    if standing.get("graduated_at") is not None:
        parts.append(f"  graduated to online at {_minute(standing['graduated_at'])} UTC")
    return "\n".join(textwrap.fill(part, width, subsequent_indent="    ") for part in parts)
