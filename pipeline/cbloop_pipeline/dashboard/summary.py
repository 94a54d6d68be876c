"""Summary tables written into a snapshot, so that no page scans the per-event tables.

Each table holds sufficient statistics (counts, sums, sums of squares), from which the pages
compute means and intervals; they are built once per published snapshot, in the copy, never
in the warehouse. One row per logged event counts (the first line of an event id wins, as in
the report views of migration 0007).
"""

from __future__ import annotations

from datetime import datetime

import duckdb

#: Candidate widths of a time-series bucket, in seconds; the smallest that keeps an
#: experiment's series under MAX_BUCKETS points is used.
BUCKET_WIDTHS = (1, 5, 10, 30, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
MAX_BUCKETS = 60
#: Logged propensities below this give importance weights over 1000: OPE then rests on a few
#: events, so the health check warns.
PROPENSITY_FLOOR = 1e-3
#: The decisions column that marks a holdout decision, under the names a migration may give
#: it (the decision line records whether a decision was a holdout one); none: no holdout.
HOLDOUT_COLUMNS = ("holdout", "is_holdout")
#: Reward delay histogram: (label, upper bound in seconds); the last bin is open.
DELAY_BINS: tuple[tuple[str, float | None], ...] = (
    ("before decision", 0.0),
    ("< 1 s", 1.0),
    ("1-10 s", 10.0),
    ("10-60 s", 60.0),
    ("1-10 min", 600.0),
    ("10-60 min", 3600.0),
    ("1-24 h", 86400.0),
    (">= 1 day", None),
)


def build_summary(
    con: duckdb.DuckDBPyConnection,
    *,
    published_at: datetime,
    waiting_ingest: int | None,
    waiting_ship: int | None,
) -> None:
    """Create the dash_* tables in the snapshot `con` (replacing any earlier ones)."""
    found = [c for c in HOLDOUT_COLUMNS if c in _columns(con, "decisions")]
    holdout = bool(found)
    holdout_expr = f"arg_min({found[0]}, ts)::BOOLEAN" if found else "NULL::BOOLEAN"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE dash_facts AS
        WITH facts AS (
            SELECT experiment, event_id, min(ts) AS ts,
                   arg_min(model_id, ts) AS model_id,
                   arg_min(p_chosen, ts) AS p_chosen,
                   arg_min(p_max, ts) AS p_max,
                   {holdout_expr} AS holdout
            FROM decisions GROUP BY experiment, event_id
        )
        SELECT f.experiment, f.event_id, f.ts, f.model_id, f.p_chosen, f.holdout,
               f.p_chosen < f.p_max AS explored, j.status, j.reward
        FROM facts f
        LEFT JOIN joined_events j ON j.experiment = f.experiment AND j.event_id = f.event_id
        """
    )
    widths = ", ".join(str(w) for w in BUCKET_WIDTHS)
    con.execute(
        f"""
        CREATE OR REPLACE TABLE dash_buckets AS
        WITH span AS (
            SELECT experiment, epoch(max(ts)) - epoch(min(ts)) AS seconds
            FROM dash_facts GROUP BY experiment
        )
        SELECT experiment,
               coalesce(min(w) FILTER (WHERE seconds / w < {MAX_BUCKETS}),
                        {BUCKET_WIDTHS[-1]})::BIGINT AS width_seconds
        FROM span, unnest([{widths}]) AS t(w)
        GROUP BY experiment
        """
    )
    stats = """
        count(*)::BIGINT AS decisions,
        count(reward)::BIGINT AS learned,
        coalesce(sum(reward), 0)::DOUBLE AS reward_sum,
        coalesce(sum(reward * reward), 0)::DOUBLE AS reward_sumsq,
        count(*) FILTER (WHERE explored)::BIGINT AS explored
    """
    con.execute(
        f"""
        CREATE OR REPLACE TABLE dash_series AS
        SELECT f.experiment,
               time_bucket(to_seconds(b.width_seconds), f.ts) AS bucket,
               {stats}
        FROM dash_facts f JOIN dash_buckets b USING (experiment)
        GROUP BY ALL
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE dash_models AS
        SELECT experiment, model_id, min(ts) AS first_ts, max(ts) AS last_ts, {stats}
        FROM dash_facts GROUP BY experiment, model_id
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE dash_holdout AS
        SELECT experiment, holdout, {stats}
        FROM dash_facts WHERE holdout IS NOT NULL GROUP BY experiment, holdout
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE dash_day AS
        SELECT experiment, {stats}
        FROM dash_facts WHERE ts > ?::TIMESTAMP - INTERVAL 1 DAY GROUP BY experiment
        """,
        [published_at],
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE dash_propensity AS
        SELECT experiment,
               count(*)::BIGINT AS decisions,
               min(p_chosen) AS min_p,
               count(*) FILTER (WHERE p_chosen IS NULL OR isnan(p_chosen) OR p_chosen <= 0
                                OR p_chosen > 1)::BIGINT AS invalid,
               count(*) FILTER (WHERE p_chosen > 0 AND p_chosen < {PROPENSITY_FLOOR})::BIGINT
                   AS below_floor
        FROM dash_facts GROUP BY experiment
        """
    )
    cases = " ".join(
        f"WHEN delay < {upper} THEN {i}"
        for i, (_, upper) in enumerate(DELAY_BINS)
        if upper is not None
    )
    con.execute(
        f"""
        CREATE OR REPLACE TABLE dash_delay AS
        WITH d AS (
            SELECT f.experiment, epoch(o.ts) - epoch(f.ts) AS delay
            FROM outcomes o JOIN dash_facts f ON f.event_id = o.event_id
            WHERE o.kind = 'reward'
        )
        SELECT experiment,
               (CASE {cases} ELSE {len(DELAY_BINS) - 1} END)::INTEGER AS bin,
               count(*)::BIGINT AS rewards,
               median(delay) AS median_seconds
        FROM d GROUP BY ALL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE dash_unused AS
        SELECT experiment, reason, count(*)::BIGINT AS rewards
        FROM unused_rewards GROUP BY ALL
        """
    )
    con.execute(
        """
        CREATE OR REPLACE TABLE dash_meta AS
        SELECT ?::TIMESTAMP AS published_at,
               ?::BIGINT AS waiting_ingest,
               ?::BIGINT AS waiting_ship,
               (SELECT count(*) FROM rejected_lines)::BIGINT AS quarantined_lines,
               ?::BOOLEAN AS holdout_recorded
        """,
        [published_at, waiting_ingest, waiting_ship, holdout],
    )
    con.execute("DROP TABLE dash_facts")


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    rows = con.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]
    ).fetchall()
    return {str(name) for (name,) in rows}
