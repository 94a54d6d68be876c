"""Write a join's labelled lines as train/eval DSJSON files in the object store.

Each exported line is the decision line exactly as logged, read again from its segment,
with the label keys spliced in first. DuckDB's CSV writer serves as a plain line writer: with
no quote or escape character and a delimiter that JSON text cannot hold raw, every line goes
out byte for byte.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cbloop.errors import TransientError
from cbloop.storage import StorageError
from cbloop_pipeline.leftovers import WORK_PREFIX, export_work_parent
from cbloop_pipeline.segments import FileSet, SegmentSource, scan_groups

logger = logging.getLogger(__name__)

SPLITS = ("train", "eval")
# JSON text never holds a raw control character (they are escaped inside strings).
_NO_SPLIT = "\x1f"


class ExportError(TransientError):
    """The export files could not be written."""


@dataclass(frozen=True)
class ExportResult:
    train_key: str
    eval_key: str


def label_prefix_sql(reward: str, p_chosen: str, chosen_action: str) -> str:
    """SQL for the label keys that open a joined line, before the decision's own keys.

    VW's streaming DSJSON parser ignores labels that come after "c", so they go first.
    `_labelIndex` is the chosen action's 0-based position in `_multi` (VW credits the cost to
    the action at that position), `_label_Action` the 1-based one as in "a". `0.0 - reward`
    writes a zero reward as cost 0.0 rather than -0.0.
    """
    return (
        f"""'{{"_label_cost":' || CAST(0.0 - {reward} AS VARCHAR)"""
        f""" || ',"_label_probability":' || CAST({p_chosen} AS VARCHAR)"""
        f""" || ',"_label_Action":' || CAST({chosen_action} AS VARCHAR)"""
        f""" || ',"_labelIndex":' || CAST({chosen_action} - 1 AS VARCHAR) || ','"""
    )


def split_keys(experiment: str, join_id: str) -> dict[str, str]:
    return {split: f"joined/{experiment}/{join_id}/{split}.dsjson" for split in SPLITS}


def export_splits(
    con: duckdb.DuckDBPyConnection,
    source: SegmentSource,
    labelled: str,
    experiment: str,
    join_id: str,
) -> ExportResult:
    """Write the rows of table `labelled` to the join's train and eval files.

    `labelled` has columns segment_id, line_no, reward, p_chosen, chosen_action and split
    ('train', 'eval', or NULL for rows not exported). Both files always exist afterwards;
    within a segment, lines keep their logged order.
    """
    keys = split_keys(experiment, join_id)
    target = source.store.local_path(keys["train"])
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
    # A run killed here leaves this folder; the next join removes it (cbloop_pipeline.leftovers).
    work = Path(
        tempfile.mkdtemp(
            prefix=f"{WORK_PREFIX}{join_id}-", dir=export_work_parent(source, experiment)
        )
    )
    try:
        segments = con.execute(
            f"""
            SELECT segment_id, key FROM ingested_segments
            WHERE segment_id IN (SELECT segment_id FROM {labelled} WHERE split IS NOT NULL)
            ORDER BY segment_id
            """
        ).fetchall()
        with source.readable([str(key) for _, key in segments]) as paths:
            files = FileSet.of(paths, [int(sid) for sid, _ in segments], scan_groups(con))
            with _plan_as_written(con):
                for split in SPLITS:
                    _copy_split(con, labelled, files, split, work / f"{split}.dsjson")
        for split in SPLITS:
            produced = work / f"{split}.dsjson"
            dest = source.store.local_path(keys[split])
            if dest is not None:
                produced.replace(dest)
            else:
                source.store.put_file(keys[split], produced)
    except (duckdb.Error, OSError, StorageError) as exc:
        raise ExportError(f"could not export join {join_id} of {experiment}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(train_key=keys["train"], eval_key=keys["eval"])


@contextmanager
def _plan_as_written(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Join with the right-hand side as the hash table, as the query is written.

    The optimizer would otherwise be free to build the hash table from the file side (one
    row per file, each holding every line of the file), which funnels all the per-line work
    through a single thread.
    """
    row = con.execute("SELECT current_setting('disabled_optimizers')").fetchone()
    before = str(row[0]) if row is not None and row[0] is not None else ""
    extra = ",".join(o for o in (before, "build_side_probe_side", "join_order") if o)
    con.execute(f"SET disabled_optimizers = '{extra}'")
    try:
        yield
    finally:
        con.execute(f"SET disabled_optimizers = '{before}'")


def _copy_split(
    con: duckdb.DuckDBPyConnection,
    labelled: str,
    files: FileSet,
    split: str,
    dest: Path,
) -> None:
    if files.groups == 0:
        dest.touch()
        return
    prefix = label_prefix_sql("d.reward", "d.p_chosen", "d.chosen_action")
    # The wanted lines are gathered per segment and picked out of each file's line list by
    # position: no per-line join of the (large) line text against the labels.
    con.execute(
        f"""
        COPY (
            WITH wanted AS (
                SELECT segment_id,
                       list({{'line_no': line_no, 'prefix': {prefix}}} ORDER BY line_no) AS rows
                FROM {labelled} d
                WHERE split = $split
                GROUP BY segment_id
            )
            SELECT unnest(list_transform(
                w.rows, lambda r: r.prefix || substr(f.l[r.line_no], 2)
            ))
            FROM {files.files_sql()} f
            JOIN wanted w USING (segment_id)
        ) TO '{_sql_string(str(dest))}' (
            FORMAT csv, HEADER false, QUOTE '', ESCAPE '', DELIMITER '{_NO_SPLIT}'
        )
        """,
        {"split": split, **files.params},
    )


def _sql_string(text: str) -> str:
    return text.replace("'", "''")
