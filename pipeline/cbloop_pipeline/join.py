"""The reward join: decisions x outcomes by event id, exported as labelled DSJSON.

A join job of experiment X at time `as_of` decides on every decision whose reward window
[ts - backward_seconds, ts + wait_seconds] has closed and that no earlier job decided on:

* rewards in the window are aggregated (earliest, latest, sum, mean, min or max); with none,
  `reward.default` is used (the event counts as defaulted), or the event is skipped if the
  default is null; a deferred decision never activated in its window is skipped;
* a decision logged twice (client retry) counts once, and so does an outcome delivered twice
  (same Idempotency-Key, or a byte-identical line);
* rewards that could not be learned from are recorded in `unused_rewards` with a reason
  (late: after the window or after the join; early; duplicate; orphan: no decision at all).

Exactly-once bookkeeping uses two watermarks per job: decision time (`as_of - wait`) and the
ingest batch. A job examines the decision rows under its watermarks that were not under the
previous job's, so a segment ingested late is still examined, once, and old decisions are
not rescanned (zone maps skip their row groups). Rewards are accounted the same way: those
of the events decided now, plus those ingested since the previous job for events decided
earlier, which are late by definition.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson

from cbloop.clock import format_ts, parse_ts, to_naive_utc, utcnow_naive
from cbloop.errors import InvalidInput
from cbloop.settings import ExperimentSettings
from cbloop.storage import ObjectStore
from cbloop_pipeline.export import export_splits
from cbloop_pipeline.leftovers import clean_leftovers
from cbloop_pipeline.segments import SegmentSource

logger = logging.getLogger(__name__)

#: Before any job: every decision and batch is above these.
_BEGINNING = datetime(1, 1, 1)

_AGGREGATIONS = {
    # The struct key makes ties (same timestamp) resolve the same way on every run.
    "earliest": "arg_min(o.value, (o.ts, o.batch_id, o.segment_id, o.value))",
    "latest": "arg_max(o.value, (o.ts, o.batch_id, o.segment_id, o.value))",
    "sum": "sum(o.value)",
    "mean": "avg(o.value)",
    "min": "min(o.value)",
    "max": "max(o.value)",
}


class JoinError(InvalidInput):
    """A join job could not run."""


@dataclass(frozen=True)
class JoinResult:
    join_id: str
    experiment: str
    as_of: datetime
    decision_ts_hi: datetime
    batch_hi: int
    decision_rows: int
    duplicate_decisions: int
    joined: int
    rewarded: int
    defaulted: int
    skipped: int
    skipped_no_reward: int
    skipped_not_activated: int
    train_events: int
    eval_events: int
    rewards_used: int
    late_rewards: int
    early_rewards: int
    orphan_rewards: int
    duplicate_rewards: int
    train_key: str
    eval_key: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("as_of", "decision_ts_hi"):
            out[key] = format_ts(out[key], timespec="auto")
        return out


@dataclass(frozen=True)
class _Marks:
    """Watermarks of the previous job (or the beginning of time)."""

    decision_ts: datetime
    batch: int
    orphan_ts: datetime
    orphan_batch: int


def parse_as_of(text: str) -> datetime:
    """'2026-11-22T12:00:00Z', '...+01:00' or naive (UTC) ISO-8601 -> naive UTC."""
    try:
        return to_naive_utc(parse_ts(text))
    except ValueError:
        raise JoinError(f"--as-of {text!r} is not an ISO-8601 timestamp") from None


def run_join(
    con: duckdb.DuckDBPyConnection,
    store: ObjectStore,
    experiment: str,
    settings: ExperimentSettings,
    *,
    as_of: datetime | None = None,
    cache_dir: Path | None = None,
) -> JoinResult:
    """Run one join job of `experiment` at `as_of` (default: now) and export its lines.

    The export goes to joined/<experiment>/<join_id>/{train,eval}.dsjson in `store`;
    `cache_dir` is where segments of a remote store were downloaded (see `ingest`).
    """
    source = SegmentSource.beside(store, con, cache_dir)
    clean_leftovers(con, source)
    as_of = to_naive_utc(as_of) if as_of is not None else utcnow_naive()
    started = utcnow_naive()
    reward = settings.reward
    wait = timedelta(seconds=reward.wait_seconds)
    backward = timedelta(seconds=reward.backward_seconds)
    con.begin()
    try:
        prev = _previous_marks(con, experiment)
        job_seq = _scalar(con, "SELECT coalesce(max(job_seq), 0) + 1 FROM join_jobs")
        join_id = f"j{job_seq:06d}-{as_of:%Y%m%dT%H%M%SZ}"
        params: dict[str, Any] = {
            "x": experiment,
            "job": job_seq,
            "w": reward.wait_seconds,
            "bw": reward.backward_seconds,
            "dflt": reward.default,
            "ratio": settings.split.train_ratio,
            "S": _scalar(con, "SELECT coalesce(max(batch_id), 0) FROM ingest_batches"),
            # Watermarks only move forward, so the "new since last job" regions never overlap.
            "T": max(as_of - wait, prev.decision_ts),
            "OT": max(as_of - wait - backward, prev.orphan_ts),
            "Tp": prev.decision_ts,
            "Sp": prev.batch,
            "OTp": prev.orphan_ts,
            "OSp": prev.orphan_batch,
        }
        _select_candidates(con, params)
        _decide(con, params, reward.aggregation)
        _record_unused(con, params)
        figures = _figures(con, params)
        con.execute(
            """
            INSERT INTO joined_events
            SELECT $job, $x, event_id, ts, status, reward, n_rewards, split
            FROM _decided
            """,
            {"job": job_seq, "x": experiment},
        )
        export = export_splits(con, source, "_decided", experiment, join_id)
        result = JoinResult(
            join_id=join_id,
            experiment=experiment,
            as_of=as_of,
            decision_ts_hi=params["T"],
            batch_hi=params["S"],
            train_key=export.train_key,
            eval_key=export.eval_key,
            **figures,
        )
        _record_job(
            con,
            result,
            job_seq=job_seq,
            started=started,
            settings=settings,
            orphan_ts_hi=params["OT"],
        )
        _drop_temp(con)
        con.commit()
    except BaseException:
        con.rollback()
        raise
    # Written after the commit: a folder without a manifest is an export whose job never
    # committed, and readers must ignore it.
    source.store.put_bytes(
        f"joined/{experiment}/{join_id}/manifest.json",
        orjson.dumps(result.to_json(), option=orjson.OPT_INDENT_2),
    )
    logger.info("join done", extra=result.to_json())
    return result


def _previous_marks(con: duckdb.DuckDBPyConnection, experiment: str) -> _Marks:
    own = con.execute(
        "SELECT max(decision_ts_hi), max(batch_hi) FROM join_jobs WHERE experiment = ?",
        [experiment],
    ).fetchone()
    # Orphans have no experiment, so their watermarks are shared by all experiments' jobs.
    shared = con.execute("SELECT max(orphan_ts_hi), max(batch_hi) FROM join_jobs").fetchone()
    assert own is not None and shared is not None  # aggregates always yield a row
    return _Marks(
        decision_ts=own[0] or _BEGINNING,
        batch=int(own[1] or 0),
        orphan_ts=shared[0] or _BEGINNING,
        orphan_batch=int(shared[1] or 0),
    )


def _select_candidates(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> None:
    """_rows: decision lines new to this job; _cand: one per event never decided before."""
    # Two conjunctive halves instead of one OR, so each can skip row groups by zone maps.
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _rows AS
        SELECT event_id, ts, batch_id, segment_id, line_no, chosen_action, p_chosen,
               sample_prob, deferred
        FROM decisions
        WHERE experiment = $x AND batch_id <= $S AND ts <= $T AND ts > $Tp
        UNION ALL
        SELECT event_id, ts, batch_id, segment_id, line_no, chosen_action, p_chosen,
               sample_prob, deferred
        FROM decisions
        WHERE experiment = $x AND batch_id <= $S AND batch_id > $Sp AND ts <= $Tp
        """,
        _only(params, "x", "S", "T", "Tp", "Sp"),
    )
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _cand AS
        SELECT *
        FROM _rows r
        WHERE NOT EXISTS (
            SELECT 1 FROM joined_events j
            WHERE j.experiment = $x AND j.event_id = r.event_id
        )
        QUALIFY row_number() OVER (
            PARTITION BY event_id ORDER BY ts, batch_id, segment_id, line_no
        ) = 1
        """,
        _only(params, "x"),
    )


def _decide(con: duckdb.DuckDBPyConnection, params: dict[str, Any], aggregation: str) -> None:
    """_oc: outcomes of the events this job looks at; _decided: each candidate's label."""
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _prior AS
        SELECT j.event_id, j.ts
        FROM joined_events j
        WHERE j.experiment = $x
          AND j.event_id IN (SELECT event_id FROM outcomes WHERE batch_id > $Sp AND batch_id <= $S)
        """,
        _only(params, "x", "Sp", "S"),
    )
    # dup_rank > 1: a second delivery of the same outcome, by Idempotency-Key when there is
    # one, else by identical content (a segment's lines loaded twice under another name).
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _oc AS
        SELECT event_id, ts, kind, value, batch_id, segment_id,
               row_number() OVER (
                   PARTITION BY event_id, kind, idempotency_key,
                       CASE WHEN idempotency_key IS NULL THEN ts END,
                       CASE WHEN idempotency_key IS NULL THEN value END
                   ORDER BY ts, batch_id, segment_id
               ) AS dup_rank
        FROM outcomes
        WHERE batch_id <= $S
          AND event_id IN (SELECT event_id FROM _cand UNION ALL SELECT event_id FROM _prior)
        """,
        _only(params, "S"),
    )
    agg = _AGGREGATIONS[aggregation]
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _decided AS
        WITH agg AS (
            SELECT c.event_id,
                   count(*) FILTER (WHERE o.kind = 'reward') AS n_rewards,
                   {agg} FILTER (WHERE o.kind = 'reward') AS reward,
                   bool_or(o.kind = 'activate') AS activated
            FROM _cand c
            JOIN _oc o ON o.event_id = c.event_id AND o.dup_rank = 1
            WHERE o.ts BETWEEN c.ts - to_microseconds(CAST($bw * 1e6 AS BIGINT))
                           AND c.ts + to_microseconds(CAST($w * 1e6 AS BIGINT))
            GROUP BY c.event_id
        ),
        st AS (
            SELECT c.*, coalesce(a.n_rewards, 0) AS n_found, a.reward AS found,
                   CASE
                       WHEN c.deferred AND NOT coalesce(a.activated, false)
                           THEN 'skipped_not_activated'
                       WHEN coalesce(a.n_rewards, 0) > 0 THEN 'rewarded'
                       WHEN $dflt IS NOT NULL THEN 'defaulted'
                       ELSE 'skipped_no_reward'
                   END AS status
            FROM _cand c LEFT JOIN agg a USING (event_id)
        )
        SELECT segment_id, line_no, event_id, ts, chosen_action, p_chosen, sample_prob, status,
               CASE status WHEN 'rewarded' THEN found WHEN 'defaulted' THEN $dflt END AS reward,
               CASE status WHEN 'rewarded' THEN n_found ELSE 0 END AS n_rewards,
               CASE WHEN status IN ('rewarded', 'defaulted')
                    THEN CASE WHEN sample_prob < $ratio THEN 'train' ELSE 'eval' END
               END AS split
        FROM st
        """,
        _only(params, "w", "bw", "dflt", "ratio"),
    )


def _record_unused(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> None:
    """Every reward seen for the first time by this experiment and not learned from."""
    window = """
        CASE
            WHEN o.dup_rank > 1 THEN 'duplicate'
            WHEN o.ts < e.ts - to_microseconds(CAST($bw * 1e6 AS BIGINT)) THEN 'before_window'
            WHEN o.ts > e.ts + to_microseconds(CAST($w * 1e6 AS BIGINT)) THEN 'after_window'
            ELSE '{in_window}'
        END
    """
    con.execute(
        f"""
        INSERT INTO unused_rewards
        SELECT * FROM (
            -- rewards of events decided now that the label did not take
            SELECT $job, $x, o.event_id, o.ts, o.value, o.batch_id,
                   {window.format(in_window="not_activated")} AS reason
            FROM _decided e JOIN _oc o ON o.event_id = e.event_id
            WHERE o.kind = 'reward'
              AND NOT (e.status = 'rewarded' AND o.dup_rank = 1
                       AND o.ts BETWEEN e.ts - to_microseconds(CAST($bw * 1e6 AS BIGINT))
                                    AND e.ts + to_microseconds(CAST($w * 1e6 AS BIGINT)))
            UNION ALL
            -- rewards ingested since the last job for events an earlier job decided on
            SELECT $job, $x, o.event_id, o.ts, o.value, o.batch_id,
                   {window.format(in_window="after_join")} AS reason
            FROM _prior e JOIN _oc o ON o.event_id = e.event_id
            WHERE o.kind = 'reward' AND o.batch_id > $Sp
        )
        """,
        _only(params, "job", "x", "w", "bw", "Sp"),
    )
    # Orphans: rewards old enough that their decision, if any, must have been logged by now.
    # Counted once over all experiments (shared watermarks); duplicates of an orphan count once.
    con.execute(
        """
        INSERT INTO unused_rewards
        SELECT $job, NULL, event_id, ts, value, batch_id, 'orphan'
        FROM (
            SELECT * FROM outcomes
            WHERE kind = 'reward' AND batch_id <= $S AND ts <= $OT AND ts > $OTp
            UNION ALL
            SELECT * FROM outcomes
            WHERE kind = 'reward' AND batch_id <= $S AND batch_id > $OSp AND ts <= $OTp
        ) o
        WHERE NOT EXISTS (SELECT 1 FROM decisions d WHERE d.event_id = o.event_id)
        QUALIFY row_number() OVER (
            PARTITION BY event_id, idempotency_key,
                CASE WHEN idempotency_key IS NULL THEN ts END,
                CASE WHEN idempotency_key IS NULL THEN value END
            ORDER BY ts, batch_id, segment_id
        ) = 1
        """,
        _only(params, "job", "S", "OT", "OTp", "OSp"),
    )


def _figures(con: duckdb.DuckDBPyConnection, params: dict[str, Any]) -> dict[str, int]:
    row = con.execute(
        """
        SELECT
            (SELECT count(*) FROM _rows),
            (SELECT count(*) FROM _cand),
            count(*) FILTER (WHERE status = 'rewarded'),
            count(*) FILTER (WHERE status = 'defaulted'),
            count(*) FILTER (WHERE status = 'skipped_no_reward'),
            count(*) FILTER (WHERE status = 'skipped_not_activated'),
            count(*) FILTER (WHERE split = 'train'),
            count(*) FILTER (WHERE split = 'eval'),
            coalesce(sum(n_rewards), 0)
        FROM _decided
        """
    ).fetchone()
    unused = dict(
        con.execute(
            "SELECT reason, count(*) FROM unused_rewards WHERE job_seq = $job GROUP BY reason",
            _only(params, "job"),
        ).fetchall()
    )
    assert row is not None  # aggregates always yield a row
    rows, cand, rewarded, defaulted, no_reward, not_activated, train, evals, used = (
        int(v) for v in row
    )
    return {
        "decision_rows": rows,
        "duplicate_decisions": rows - cand,
        "joined": rewarded + defaulted,
        "rewarded": rewarded,
        "defaulted": defaulted,
        "skipped": no_reward + not_activated,
        "skipped_no_reward": no_reward,
        "skipped_not_activated": not_activated,
        "train_events": train,
        "eval_events": evals,
        "rewards_used": used,
        "late_rewards": int(unused.get("after_window", 0) + unused.get("after_join", 0)),
        "early_rewards": int(unused.get("before_window", 0)),
        "orphan_rewards": int(unused.get("orphan", 0)),
        "duplicate_rewards": int(unused.get("duplicate", 0)),
    }


def _record_job(
    con: duckdb.DuckDBPyConnection,
    result: JoinResult,
    *,
    job_seq: int,
    started: datetime,
    settings: ExperimentSettings,
    orphan_ts_hi: datetime,
) -> None:
    reward = settings.reward
    finished = utcnow_naive()
    con.execute(
        """
        INSERT INTO join_jobs BY NAME
        SELECT $job_seq AS job_seq, $join_id AS join_id, $experiment AS experiment,
               $as_of AS as_of, $started_at AS started_at, $finished_at AS finished_at,
               $wait_seconds AS wait_seconds, $backward_seconds AS backward_seconds,
               $aggregation AS aggregation, $default_reward AS default_reward,
               $train_ratio AS train_ratio, $decision_ts_hi AS decision_ts_hi,
               $batch_hi AS batch_hi, $orphan_ts_hi AS orphan_ts_hi,
               $decision_rows AS decision_rows, $duplicate_decisions AS duplicate_decisions,
               $joined AS joined, $rewarded AS rewarded, $defaulted AS defaulted,
               $skipped AS skipped, $skipped_no_reward AS skipped_no_reward,
               $skipped_not_activated AS skipped_not_activated,
               $train_events AS train_events, $eval_events AS eval_events,
               $rewards_used AS rewards_used, $late_rewards AS late_rewards,
               $early_rewards AS early_rewards, $orphan_rewards AS orphan_rewards,
               $duplicate_rewards AS duplicate_rewards,
               $train_key AS train_key, $eval_key AS eval_key
        """,
        {
            **asdict(result),
            "job_seq": job_seq,
            "started_at": started,
            "finished_at": finished,
            "wait_seconds": reward.wait_seconds,
            "backward_seconds": reward.backward_seconds,
            "aggregation": reward.aggregation,
            "default_reward": reward.default,
            "train_ratio": settings.split.train_ratio,
            "orphan_ts_hi": orphan_ts_hi,
        },
    )
    con.execute(
        """
        INSERT INTO experiments (name, last_join_id, last_join_at) VALUES ($x, $j, $t)
        ON CONFLICT (name) DO UPDATE
        SET last_join_id = excluded.last_join_id, last_join_at = excluded.last_join_at,
            updated_at = excluded.last_join_at
        """,
        {"x": result.experiment, "j": result.join_id, "t": finished},
    )


def _drop_temp(con: duckdb.DuckDBPyConnection) -> None:
    for table in ("_rows", "_cand", "_prior", "_oc", "_decided"):
        con.execute(f"DROP TABLE IF EXISTS {table}")


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None  # callers only pass aggregates, which always yield a row
    return row[0]


def _only(params: dict[str, Any], *names: str) -> dict[str, Any]:
    # DuckDB refuses named parameters a statement does not use.
    return {name: params[name] for name in names}
