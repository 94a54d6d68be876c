"""Warm-start data for `cbloop train --warm-start PATH`.

Two kinds of file are accepted: DSJSON history exported from elsewhere (joined lines, labels
first), which VW reads as is, or a labelled table (CSV or whitespace-separated), which becomes
the events a uniformly random policy would have logged on it: each class an action, reward 1
for the row's class. The table conversion is cbloop_pipeline.tables', shared with the simulator, so a
warm-started model sees contexts and actions encoded exactly as they will be served.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cbloop_pipeline.tables import TableError, fit_encoder, load_table, logged_uniform_events
from cbloop_pipeline.train import TrainError, TrainSource

logger = logging.getLogger(__name__)

_SNIFF_BYTES = 4096


@dataclass(frozen=True)
class WarmStartOptions:
    """How to read a warm-start file.

    label_column: for tables: header name, or column index (negative from the end); None =
        the last column.
    events: for tables: how many logged events to generate (default: one per row).
    seed: for tables: the seed of the row order, the uniform choices and the split draws.
    """

    label_column: str | int | None = None
    events: int | None = None
    seed: int = 0


def is_dsjson(path: Path) -> bool:
    """A DSJSON file starts with a JSON object; a table never does."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise TrainError(f"warm-start file not found: {path}") from None
    except IsADirectoryError:
        raise TrainError(f"warm-start path is a directory: {path}") from None
    return head.lstrip().startswith(b"{")


def warm_start_source(
    path: Path, experiment: str, options: WarmStartOptions, work: Path
) -> TrainSource:
    """A training source for `path`; tables are converted into `work`."""
    if is_dsjson(path):
        return TrainSource("warm_start", path.name, path, {"format": "dsjson", "path": str(path)})
    try:
        table = load_table(path, options.label_column)
        n = len(table) if options.events is None else options.events
        lines = logged_uniform_events(
            table, n, options.seed, encoder=fit_encoder(table), experiment=experiment
        )
    except TableError as exc:
        raise TrainError(f"warm-start table {path}: {exc}") from exc
    out = work / "warm-start.dsjson"
    with out.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
    logger.info(
        "warm start: %d uniform-policy events over %d classes from %s",
        n,
        len(table.classes),
        path,
    )
    details = {
        "format": "table",
        "path": str(path),
        "label_column": table.label_name,
        "classes": list(table.classes),
        "rows": len(table),
        "events": n,
        "seed": options.seed,
    }
    return TrainSource("warm_start", path.name, out, details)
