"""Experiment reports: the dashboard's views (migration 0007) queried and rendered."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import duckdb
import orjson

from cbloop.clock import format_ts
from cbloop_pipeline.graduation import graduation_of, latest_assessment
from cbloop_pipeline.lift import holdout_lift
from cbloop_pipeline.report_view import legend, render_apprentice, render_lift, render_rows

Grouping = Literal["hour", "model", "experiment"]
Format = Literal["table", "json", "csv"]

_VIEWS: dict[Grouping, tuple[str, str]] = {
    "hour": ("report_hourly", "hour, model_id"),
    "model": ("report_by_model", "first_hour, model_id"),
    "experiment": ("report_by_experiment", "experiment"),
}


@dataclass(frozen=True)
class Report:
    experiment: str
    by: Grouping
    columns: list[str]
    rows: list[tuple[Any, ...]]
    #: Counts over the whole warehouse (see `warehouse_counts`); None when not measured.
    counts: dict[str, int | None] = field(default_factory=dict)
    #: Bandit against holdout per period, day and overall (pipeline.lift.holdout_lift).
    lift: dict[str, Any] = field(default_factory=dict)
    #: The newest apprentice assessment and the graduation, if any (pipeline.graduation).
    apprentice: dict[str, Any] | None = None

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


def experiment_report(
    con: duckdb.DuckDBPyConnection, experiment: str, by: Grouping = "hour"
) -> Report:
    view, order = _VIEWS[by]
    cursor = con.execute(
        f"SELECT * FROM {view} WHERE experiment = ? ORDER BY {order}", [experiment]
    )
    columns = [d[0] for d in cursor.description]
    rows = [tuple(r) for r in cursor.fetchall()]
    return Report(
        experiment,
        by,
        columns,
        rows,
        warehouse_counts(con),
        lift=holdout_lift(con, experiment),
        apprentice=apprentice_standing(con, experiment),
    )


def apprentice_standing(con: duckdb.DuckDBPyConnection, experiment: str) -> dict[str, Any] | None:
    """The newest assessment of the experiment's apprentice bandit, with its graduation."""
    latest = latest_assessment(con, experiment)
    if latest is None:
        return None
    graduation = graduation_of(con, experiment)
    latest["graduated_at"] = graduation["graduated_at"] if graduation else None
    return latest


#: What the counts mean, for the table's footer and the README.
COUNT_MEANINGS = {
    "orphan_rewards": "rewards whose event id matches no decision, all experiments",
    "rejected_lines": "segment lines ingest could not use, kept verbatim in rejected_lines",
    "quarantined_lines": "lines ingest set aside for breaking the event contract, "
    "with the reason, in quarantined_lines",
}


def warehouse_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int | None]:
    """Orphan rewards and refused lines; they have no experiment, so they are warehouse-wide.

    quarantined_lines is None while the warehouse has no `quarantined_lines` table or view
    (ingest's contract validation adds one; it is counted as soon as it exists).
    """
    orphans = con.execute("SELECT coalesce(sum(orphan_rewards), 0) FROM join_jobs").fetchone()
    rejected = con.execute("SELECT count(*) FROM rejected_lines").fetchone()
    assert orphans is not None and rejected is not None  # aggregates always yield a row
    quarantined: int | None = None
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'quarantined_lines' "
        "AND table_schema = current_schema()"
    ).fetchone()
    if exists is not None and exists[0]:
        row = con.execute("SELECT count(*) FROM quarantined_lines").fetchone()
        quarantined = int(row[0]) if row is not None else 0
    return {
        "orphan_rewards": int(orphans[0]),
        "rejected_lines": int(rejected[0]),
        "quarantined_lines": quarantined,
    }


def render(report: Report, fmt: Format, *, width: int | None = None) -> str:
    if fmt == "json":
        return orjson.dumps(
            {
                "experiment": report.experiment,
                "by": report.by,
                "rows": [{k: _plain(v) for k, v in r.items()} for r in report.records()],
                "counts": report.counts,
                "lift": _plain_tree(report.lift),
                "apprentice": _plain_tree(report.apprentice),
            },
            option=orjson.OPT_INDENT_2,
        ).decode()
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(report.columns)
        for row in report.rows:
            writer.writerow(["" if v is None else _plain(v) for v in row])
        return out.getvalue().rstrip("\n")
    return _table(report, width)


def _table(report: Report, width: int | None) -> str:
    title = f"experiment {report.experiment} by {report.by}"
    if report.rows:
        body = render_rows(title, report.by, report.records(), width or 100)
    else:
        body = f"{title}: no decisions yet"
    shown = dict(report.counts)
    if shown.get("quarantined_lines") is not None:
        # Quarantine keeps its lines in rejected_lines too: one count, not the same twice.
        shown.pop("rejected_lines", None)
    else:
        shown.pop("quarantined_lines", None)
    counts = [
        f"{name.replace('_', ' ')}: {value}  ({COUNT_MEANINGS[name]})"
        for name, value in shown.items()
    ]
    parts = [body, "\n".join(counts)] if counts else [body]
    if report.lift:
        parts.append(render_lift(report.lift, width or 100))
    apprentice = render_apprentice(report.apprentice, width or 100)
    if apprentice is not None:
        parts.append(apprentice)
    if report.rows:
        parts.append(legend(report.by))
    return "\n\n".join(parts)


def _plain_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_tree(v) for v in value]
    return _plain(value)


def _plain(value: Any) -> Any:
    """JSON/CSV-friendly: ISO times with Z, no NaN."""
    if isinstance(value, datetime):
        return format_ts(value, timespec="auto")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
