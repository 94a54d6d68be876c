"""Experiment reports: the dashboard's views (migration 0007) queried and rendered."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import duckdb
import orjson
from rich.console import Console
from rich.table import Table

from cbloop.clock import format_ts

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
    return Report(experiment, by, columns, [tuple(r) for r in cursor.fetchall()])


def render(report: Report, fmt: Format, *, width: int | None = None) -> str:
    if fmt == "json":
        return orjson.dumps(
            [{k: _plain(v) for k, v in r.items()} for r in report.records()],
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
    table = Table(title=f"experiment {report.experiment} by {report.by}")
    for name in report.columns:
        table.add_column(name, justify="left" if name in _TEXT_COLUMNS else "right")
    for row in report.rows:
        table.add_row(*(_cell(v) for v in row))
    # Wide enough for every column at full name; a pager or terminal can scroll it.
    console = Console(file=io.StringIO(), width=width or 260, record=True)
    console.print(table)
    return console.export_text().rstrip("\n")


_TEXT_COLUMNS = frozenset({"experiment", "model_id", "hour", "first_hour", "last_hour"})


def _plain(value: Any) -> Any:
    """JSON/CSV-friendly: ISO times with Z, no NaN."""
    if isinstance(value, datetime):
        return format_ts(value, timespec="auto")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)
