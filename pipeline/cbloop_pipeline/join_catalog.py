"""The finished joins of an experiment, as training and evaluation consume them.

A join job's row in `join_jobs` (migration 0005) is written once its train and eval exports
are in the store, so every row listed here has complete files, unless retention deleted them
(recorded in `retention_deletions`, migration 0090): those joins are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from cbloop_pipeline.evaluate import EvalSplit
from cbloop_pipeline.train import JoinExport


@dataclass(frozen=True)
class FinishedJoin:
    join_id: str
    train_key: str
    eval_key: str
    train_events: int
    eval_events: int

    def train_export(self) -> JoinExport:
        return JoinExport(self.join_id, self.train_key, self.train_events)

    def eval_split(self) -> EvalSplit:
        return EvalSplit(self.join_id, self.eval_key)


def finished_joins(con: duckdb.DuckDBPyConnection, experiment: str) -> list[FinishedJoin]:
    """Every join of `experiment` whose exports are still kept (retention), oldest first."""
    rows = con.execute(
        "SELECT join_id, train_key, eval_key, train_events, eval_events FROM join_jobs "
        "WHERE experiment = ? AND join_id NOT IN "
        "(SELECT item FROM retention_deletions WHERE kind = 'export') ORDER BY job_seq",
        [experiment],
    ).fetchall()
    return [FinishedJoin(str(j), str(t), str(e), int(nt), int(ne)) for j, t, e, nt, ne in rows]
