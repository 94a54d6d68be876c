"""Labelled tables as a contextual-bandit world.

A labelled table (attributes + a class column) becomes a bandit problem the way the reference
"statlog" workflow does it: every class is an action, the context is the row's attributes and
the reward is 1 when the chosen action is the row's class, else 0. The warm start
(`cbloop train --warm-start table.csv`) and the simulator (`cbloop simulate --data table`) both
go through this module, so they encode a row identically.
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cbloop.clock import format_ts
from cbloop.encoding import (
    build_vw_context,
    decision_line,
    encode_context,
    labelled_line,
)
from cbloop.errors import InvalidInput

__all__ = [
    "BINNED_NAMESPACE",
    "NUMERIC_NAMESPACE",
    "ColumnEncoding",
    "LabelledTable",
    "TableEncoder",
    "TableError",
    "fit_encoder",
    "load_table",
    "logged_uniform_events",
    "reward_for",
]

FeatureValue = str | float | int | bool
Context = dict[str, dict[str, FeatureValue]]

# Namespace first letters matter to VW interactions (`-q bA` crosses "b" with "ActionId"), so
# the two attribute views get distinct one-letter namespaces.
NUMERIC_NAMESPACE = "x"
BINNED_NAMESPACE = "b"
DEFAULT_BINS = 10

# Cells that mean "no value" rather than "a categorical value": a numeric column keeps its raw
# feature for the rows that have a number and bins the missing ones separately.
_MISSING = frozenset({"", "?", "na", "n/a", "nan", "null", "none"})
_MISSING_BIN = "na"
_SNIFF_LINES = 200
_CSV_DELIMITERS = ",;\t|"
# Fixed, so that the same table and seed always give byte-identical warm-start lines.
WARM_START_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class TableError(InvalidInput, ValueError):
    """The table cannot be used as a labelled table; the message names the problem."""


@dataclass(frozen=True)
class LabelledTable:
    """Attribute cells (as read, untyped) and one class label per row."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    labels: tuple[str, ...]
    label_name: str

    def __post_init__(self) -> None:
        if len(self.rows) != len(self.labels):
            raise TableError(f"{len(self.rows)} rows but {len(self.labels)} labels")
        if any(len(row) != len(self.columns) for row in self.rows):
            raise TableError(f"every row must have {len(self.columns)} attribute cells")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def classes(self) -> tuple[str, ...]:
        """The distinct labels, in the order that defines the action list."""
        return _sorted_labels(set(self.labels))

    def subset(self, indices: Sequence[int]) -> LabelledTable:
        """The rows at `indices`, in that order (for shuffles and train/test splits)."""
        return LabelledTable(
            columns=self.columns,
            rows=tuple(self.rows[i] for i in indices),
            labels=tuple(self.labels[i] for i in indices),
            label_name=self.label_name,
        )


def _sorted_labels(labels: set[str]) -> tuple[str, ...]:
    # Numeric labels sort by value so classes 1..10 do not come out as 1, 10, 2, ...
    if all(_as_number(label) is not None for label in labels):
        return tuple(sorted(labels, key=lambda s: (_as_number(s), s)))
    return tuple(sorted(labels))


def _as_number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _is_missing(cell: str) -> bool:
    return cell.strip().lower() in _MISSING


# --------------------------------------------------------------------------------------------
# Loading


def load_table(
    path: str | Path,
    label_col: str | int | None = None,
    *,
    header: bool | None = None,
) -> LabelledTable:
    """Read a CSV (any of , ; tab |) or whitespace-separated table with a class column.

    `label_col`: None = last column, an int = column index (negative counts from the end), a
    str = header name. `header`: None = sniff it. Raises `TableError` naming the problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TableError(f"table file not found: {path}") from None
    except IsADirectoryError:
        raise TableError(f"table path is a directory, not a file: {path}") from None
    except UnicodeDecodeError as exc:
        raise TableError(f"table file {path} is not UTF-8 text: {exc}") from None
    records = list(_records(text))
    if not records:
        raise TableError(f"table file {path} has no rows")
    _check_rectangular(records, path)
    has_header = _decide_header(records, label_col) if header is None else header
    if has_header:
        names = tuple(cell.strip() for cell in records[0][1])
        body = records[1:]
    else:
        names = tuple(f"a{i + 1}" for i in range(len(records[0][1])))
        body = records
    if not body:
        raise TableError(f"table file {path} has a header but no data rows")
    label_index = _label_index(label_col, names, has_header, path)
    return _split_label(body, names, label_index, path)


def _records(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, cells) for every non-blank line, in the file's own dialect."""
    lines = text.splitlines()
    delimiter = _sniff_delimiter(lines[:_SNIFF_LINES])
    if delimiter is None:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, line.split()
        return
    reader = csv.reader(lines, delimiter=delimiter)
    for cells in reader:
        if any(cell.strip() for cell in cells):
            yield reader.line_num, [cell.strip() for cell in cells]


def _sniff_delimiter(sample: list[str]) -> str | None:
    """The CSV delimiter, or None for whitespace-separated files like shuttle.trn.

    The delimiter found on the most lines wins. csv.Sniffer is not used because it gives up on
    exactly the files that need a clear error, e.g. one with a ragged row.
    """
    lines = [line for line in sample if line.strip()]
    counts = {d: sum(d in line for line in lines) for d in _CSV_DELIMITERS}
    best = max(_CSV_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else None


def _check_rectangular(records: list[tuple[int, list[str]]], path: Path) -> None:
    width = len(records[0][1])
    if width < 2:
        raise TableError(
            f"table file {path} line {records[0][0]} has {width} column; a labelled table "
            "needs at least one attribute and a label"
        )
    for number, cells in records:
        if len(cells) != width:
            raise TableError(
                f"table file {path} line {number} has {len(cells)} fields, expected {width} "
                "(ragged rows)"
            )


def _decide_header(records: list[tuple[int, list[str]]], label_col: str | int | None) -> bool:
    first = records[0][1]
    if isinstance(label_col, str) and label_col in (cell.strip() for cell in first):
        return True
    rest = [cells for _, cells in records[1:200]]
    if not rest:
        return False
    # A header is the only row with a name where the data below is numbers.
    for j, cell in enumerate(first):
        column = [cells[j] for cells in rest if not _is_missing(cells[j])]
        is_name = _as_number(cell) is None and not _is_missing(cell)
        if is_name and column and all(_as_number(v) is not None for v in column):
            return True
    # All-categorical tables: a header row repeats none of its values in the body.
    if all(_as_number(cell) is None for cell in first):
        return all(first[j] not in {cells[j] for cells in rest} for j in range(len(first)))
    return False


def _label_index(
    label_col: str | int | None, names: tuple[str, ...], has_header: bool, path: Path
) -> int:
    width = len(names)
    if label_col is None:
        return width - 1
    if isinstance(label_col, str):
        if not has_header:
            raise TableError(
                f"label column {label_col!r} given by name but table file {path} has no header"
            )
        if label_col not in names:
            raise TableError(
                f"label column {label_col!r} not in the header of {path}: {', '.join(names)}"
            )
        return names.index(label_col)
    if not -width <= label_col < width:
        raise TableError(
            f"label column {label_col} out of range: table file {path} has {width} columns"
        )
    return label_col % width


def _split_label(
    body: list[tuple[int, list[str]]], names: tuple[str, ...], label_index: int, path: Path
) -> LabelledTable:
    rows: list[tuple[str, ...]] = []
    labels: list[str] = []
    for number, cells in body:
        label = cells[label_index].strip()
        if _is_missing(label):
            raise TableError(f"table file {path} line {number} has no label")
        labels.append(label)
        rows.append((*cells[:label_index], *cells[label_index + 1 :]))
    if len(set(labels)) < 2:
        raise TableError(
            f"table file {path} has fewer than 2 classes in column {names[label_index]!r}; "
            "a bandit needs at least two actions"
        )
    return LabelledTable(
        columns=tuple(n for j, n in enumerate(names) if j != label_index),
        rows=tuple(rows),
        labels=tuple(labels),
        label_name=names[label_index],
    )


# --------------------------------------------------------------------------------------------
# Encoding


@dataclass(frozen=True)
class ColumnEncoding:
    """How one attribute becomes features. `edges` are the quantile cut points (numeric only)."""

    name: str
    kind: Literal["numeric", "categorical"]
    edges: tuple[float, ...] = ()

    def bin_of(self, cell: str) -> str:
        """The bin label ("q0", "q1", ... or "na") of a numeric cell."""
        return self.bin_of_value(_as_number(cell))

    def bin_of_value(self, value: float | None) -> str:
        """The bin label of an already parsed number (None = missing)."""
        if value is None:
            return _MISSING_BIN
        return f"q{bisect.bisect_right(self.edges, value)}"


@dataclass(frozen=True)
class TableEncoder:
    """Row -> API context, and classes -> API actions; fitted once on a table, then frozen."""

    columns: tuple[ColumnEncoding, ...]
    actions: tuple[str, ...]
    numeric: bool = True
    binned: bool = True

    def context(self, row: Sequence[str]) -> Context:
        """The API context `{ns: {feature: value}}` of one row's attribute cells."""
        if len(row) != len(self.columns):
            raise TableError(f"row has {len(row)} cells, the encoder expects {len(self.columns)}")
        raw: dict[str, FeatureValue] = {}
        cats: dict[str, FeatureValue] = {}
        for column, cell in zip(self.columns, row, strict=True):
            if column.kind == "categorical":
                if not _is_missing(cell):
                    cats[column.name] = cell.strip()
                continue
            value = _as_number(cell)
            if self.numeric and value is not None:
                raw[column.name] = value
            if self.binned:
                cats[column.name] = column.bin_of_value(value)
        context: Context = {}
        if raw:
            context[NUMERIC_NAMESPACE] = raw
        if cats:
            context[BINNED_NAMESPACE] = cats
        return context

    def action_payloads(self) -> list[dict[str, object]]:
        """The API action list: one action per class, id = the class label, no features."""
        return [{"id": action, "features": {}} for action in self.actions]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description, so a model's metadata can record how its rows were encoded."""
        return {
            "numeric": self.numeric,
            "binned": self.binned,
            "actions": list(self.actions),
            "columns": [
                {"name": c.name, "kind": c.kind, "edges": list(c.edges)} for c in self.columns
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TableEncoder:
        """The inverse of `to_dict`; raises `TableError` on a malformed description."""
        try:
            columns = tuple(
                ColumnEncoding(
                    name=str(c["name"]),
                    kind=_column_kind(c["kind"]),
                    edges=tuple(float(e) for e in c["edges"]),
                )
                for c in data["columns"]
            )
            return cls(
                columns=columns,
                actions=tuple(str(a) for a in data["actions"]),
                numeric=bool(data["numeric"]),
                binned=bool(data["binned"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TableError(f"malformed table encoder description: {exc!r}") from exc


def _column_kind(kind: object) -> Literal["numeric", "categorical"]:
    if kind == "numeric":
        return "numeric"
    if kind == "categorical":
        return "categorical"
    raise TableError(f"unknown column kind {kind!r}")


def fit_encoder(
    table: LabelledTable, *, bins: int = DEFAULT_BINS, numeric: bool = True, binned: bool = True
) -> TableEncoder:
    """Fit the encoder on `table`: column kinds and quantile edges. Deterministic."""
    if bins < 1:
        raise TableError(f"bins must be at least 1, got {bins}")
    if not (numeric or binned):
        raise TableError("the encoder needs the numeric view, the binned view or both")
    columns = tuple(
        _fit_column(name, [row[j] for row in table.rows], bins)
        for j, name in enumerate(table.columns)
    )
    return TableEncoder(columns=columns, actions=table.classes, numeric=numeric, binned=binned)


def _fit_column(name: str, cells: list[str], bins: int) -> ColumnEncoding:
    numbers = _numeric_column(cells)
    if numbers is None:
        return ColumnEncoding(name=name, kind="categorical")
    cuts = np.quantile(numbers, np.arange(1, bins) / bins)
    # Heavy ties (shuttle's columns are mostly one value) collapse cut points; duplicates would
    # only make empty bins.
    edges = tuple(sorted({float(c) for c in cuts}))
    return ColumnEncoding(name=name, kind="numeric", edges=edges)


def _numeric_column(cells: list[str]) -> np.ndarray[Any, np.dtype[np.float64]] | None:
    """The column's numbers (missing cells dropped), or None if it is categorical."""
    try:
        # Fast path for the common all-numbers column; numpy parses the strings itself.
        values = np.asarray(cells, dtype=np.float64)
    except ValueError:
        present = [c for c in cells if not _is_missing(c)]
        parsed = [_as_number(c) for c in present]
        # One non-number makes the whole column categorical: a mixed column is usually codes.
        if not present or any(v is None for v in parsed):
            return None
        values = np.asarray(parsed, dtype=np.float64)
    else:
        # float("nan") parses, so NaN cells (missing) are dropped; infinities are not numbers.
        values = values[~np.isnan(values)]
        if values.size == 0 or not np.isfinite(values).all():
            return None
    return values


def reward_for(label: str, action_id: str) -> float:
    """The world's reward: 1 for choosing the row's class, 0 otherwise."""
    return 1.0 if action_id == label else 0.0


# --------------------------------------------------------------------------------------------
# Warm start: events as logged by a uniformly random policy


def logged_uniform_events(
    table: LabelledTable,
    n: int,
    seed: int,
    *,
    encoder: TableEncoder | None = None,
    experiment: str = "default",
    model_id: str = "uniform",
    start: datetime = WARM_START_EPOCH,
) -> list[str]:
    """`n` joined DSJSON lines (labels first) from a uniform policy over the table's classes.

    Rows are visited in a seeded shuffle (reshuffled each time the table is used up); each row's
    action is drawn uniformly, reward = 1 if it is the row's class. Same inputs, same bytes.
    """
    if n < 0:
        raise TableError(f"number of events must be non-negative, got {n}")
    if n and not len(table):
        raise TableError("cannot log events on a table with no rows")
    encoder = encoder if encoder is not None else fit_encoder(table)
    rng = random.Random(seed)
    k = len(encoder.actions)
    lines: list[str] = []
    for i, row_index in enumerate(_row_stream(len(table), n, rng)):
        chosen = rng.randrange(k)
        reward = reward_for(table.labels[row_index], encoder.actions[chosen])
        context = encoder.context(table.rows[row_index])
        line = _joined_line(
            event_id=f"warm-{seed}-{i:06d}",
            moment=start + timedelta(seconds=i),
            context=context,
            actions=encoder.actions,
            chosen=chosen,
            reward=reward,
            experiment=experiment,
            model_id=model_id,
            sample_prob=rng.random(),
        )
        lines.append(line)
    return lines


def _row_stream(size: int, n: int, rng: random.Random) -> Iterator[int]:
    emitted = 0
    while emitted < n:
        order = list(range(size))
        rng.shuffle(order)
        yield from order[: n - emitted]
        emitted += min(size, n - emitted)


def _joined_line(
    *,
    event_id: str,
    moment: datetime,
    context: Context,
    actions: Sequence[str],
    chosen: int,
    reward: float,
    experiment: str,
    model_id: str,
    sample_prob: float,
) -> str:
    k = len(actions)
    c = build_vw_context(context, [(action, {}) for action in actions])
    decision = decision_line(
        event_id=event_id,
        ts=format_ts(moment),
        order=[chosen, *(j for j in range(k) if j != chosen)],
        probabilities=[1.0 / k] * k,
        c_json=encode_context(c),
        experiment=experiment,
        model_id=model_id,
        action_ids=actions,
        sample_prob=sample_prob,
        deferred=False,
    )
    return labelled_line(decision, chosen=chosen, probability=1.0 / k, reward=reward).decode()
