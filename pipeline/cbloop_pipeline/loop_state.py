"""The learning loop's per-experiment state in the warehouse (migration 0013).

`experiment_state` says where each experiment's current cycle is and how each step last
ended; `loop_steps` keeps every step run. The loop writes a step's row as "running" before it
starts and as done/skipped/failed after, so a loop killed mid-step is found "running" at that
step by the next start, which resumes the cycle there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import duckdb

from cbloop.clock import utcnow_naive
from cbloop_pipeline.loop_resilience import Outage

logger = logging.getLogger(__name__)

STEPS = ("ingest", "join", "train", "evaluate", "deploy")
#: experiment_state columns a step may set besides its own state.
RESULT_COLUMNS = frozenset(
    {
        "last_join_id",
        "last_trained_model_id",
        "last_evaluated_model_id",
        "last_eval_id",
        "deployed_model_id",
    }
)


@dataclass(frozen=True)
class LoopState:
    experiment: str
    cycle: int
    step: str
    status: str

    @property
    def interrupted(self) -> bool:
        """A cycle that was running when its process stopped."""
        return self.status == "running" and self.step in STEPS


def load(con: duckdb.DuckDBPyConnection, experiment: str) -> LoopState | None:
    row = con.execute(
        "SELECT cycle, step, status FROM experiment_state WHERE experiment = ?", [experiment]
    ).fetchone()
    if row is None:
        return None
    return LoopState(experiment, int(row[0]), str(row[1]), str(row[2]))


def start_cycle(con: duckdb.DuckDBPyConnection, experiment: str) -> int:
    """Begin a new cycle; returns its number."""
    now = utcnow_naive()
    previous = load(con, experiment)
    cycle = (previous.cycle if previous else 0) + 1
    if previous is None:
        con.execute(
            "INSERT INTO experiment_state (experiment, cycle, step, status, cycle_started_at, "
            "updated_at) VALUES (?, ?, 'ingest', 'running', ?, ?)",
            [experiment, cycle, now, now],
        )
    else:
        con.execute(
            "UPDATE experiment_state SET cycle = ?, step = 'ingest', status = 'running', "
            "last_error = NULL, cycle_started_at = ?, cycle_finished_at = NULL, updated_at = ? "
            "WHERE experiment = ?",
            [cycle, now, now, experiment],
        )
    return cycle


def step_started(con: duckdb.DuckDBPyConnection, experiment: str, step: str) -> None:
    con.execute(
        f"UPDATE experiment_state SET step = ?, status = 'running', {_state_col(step)} = "
        "'running', updated_at = ? WHERE experiment = ?",
        [step, utcnow_naive(), experiment],
    )


def step_finished(
    con: duckdb.DuckDBPyConnection,
    experiment: str,
    cycle: int,
    step: str,
    *,
    status: str,
    detail: str,
    started_at: datetime,
    results: dict[str, str | None] | None = None,
) -> None:
    """Record how a step ended (done | skipped | failed) and what it produced."""
    results = {k: v for k, v in (results or {}).items() if v is not None}
    unknown = set(results) - RESULT_COLUMNS
    if unknown:
        raise ValueError(f"not loop-state columns: {sorted(unknown)}")
    now = utcnow_naive()
    sets = [f"{_state_col(step)} = ?", "updated_at = ?"]
    values: list[object] = [status, now]
    for column, value in results.items():
        sets.append(f"{column} = ?")
        values.append(value)
    if status == "failed":
        sets += ["status = 'failed'", "last_error = ?"]
        values.append(detail)
    con.begin()
    try:
        con.execute(
            f"UPDATE experiment_state SET {', '.join(sets)} WHERE experiment = ?",
            [*values, experiment],
        )
        con.execute(
            "INSERT INTO loop_steps VALUES (?, ?, ?, ?, ?, ?, ?)",
            [experiment, cycle, step, status, started_at, now, detail],
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise


def stage_failed(
    con: duckdb.DuckDBPyConnection,
    experiment: str,
    cycle: int,
    stage: str,
    *,
    detail: str,
    started_at: datetime,
) -> None:
    """Record a failure between steps (`stage`: reconcile | sync): the cycle stops there and
    the next one starts afresh, as after a failed step."""
    now = utcnow_naive()
    con.begin()
    try:
        con.execute(
            "UPDATE experiment_state SET status = 'failed', last_error = ?, updated_at = ? "
            "WHERE experiment = ?",
            [f"{stage}: {detail}", now, experiment],
        )
        con.execute(
            "INSERT INTO loop_steps VALUES (?, ?, ?, 'failed', ?, ?, ?)",
            [experiment, cycle, stage, started_at, now, detail],
        )
        con.commit()
    except BaseException:
        con.rollback()
        raise


def record_outages(con: duckdb.DuckDBPyConnection, outages: Iterable[Outage]) -> None:
    """Record failures from while the warehouse could not be written (step = their stage,
    cycle = the experiment's cycle at the time)."""
    now = utcnow_naive()
    for outage in outages:
        state = load(con, outage.experiment)
        con.execute(
            "INSERT INTO loop_steps VALUES (?, ?, ?, 'failed', ?, ?, ?)",
            [
                outage.experiment,
                state.cycle if state else 0,
                outage.stage,
                outage.at,
                now,
                outage.detail,
            ],
        )
        logger.info("recorded an earlier failure", extra={"experiment": outage.experiment})


def finish_cycle(con: duckdb.DuckDBPyConnection, experiment: str) -> None:
    now = utcnow_naive()
    con.execute(
        "UPDATE experiment_state SET step = 'idle', status = 'done', cycle_finished_at = ?, "
        "updated_at = ? WHERE experiment = ?",
        [now, now, experiment],
    )


def _state_col(step: str) -> str:
    if step not in STEPS:
        raise ValueError(f"unknown loop step {step!r}")
    return f"{step}_state"
