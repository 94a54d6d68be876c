-- One row per join run, with the settings it used, its watermarks and its figures.
-- A job examines the decision rows with ts <= decision_ts_hi and batch_id <= batch_hi that no
-- earlier job of the experiment examined (earlier jobs had lower watermarks), so every row is
-- looked at exactly once however late its segment was ingested.
CREATE TABLE join_jobs (
    job_seq                 INTEGER PRIMARY KEY,
    join_id                 VARCHAR NOT NULL UNIQUE,
    experiment              VARCHAR NOT NULL,
    as_of                   TIMESTAMP NOT NULL,
    started_at              TIMESTAMP NOT NULL,
    finished_at             TIMESTAMP NOT NULL,
    -- settings in force
    wait_seconds            DOUBLE NOT NULL,
    backward_seconds        DOUBLE NOT NULL,
    aggregation             VARCHAR NOT NULL,
    default_reward          DOUBLE,                -- NULL: events without reward are skipped
    train_ratio             DOUBLE NOT NULL,
    -- watermarks (cumulative maxima)
    decision_ts_hi          TIMESTAMP NOT NULL,    -- as_of - wait: windows closed up to here
    batch_hi                INTEGER NOT NULL,      -- last ingest batch the job saw
    orphan_ts_hi            TIMESTAMP NOT NULL,    -- as_of - wait - backward (global)
    -- figures
    decision_rows           BIGINT NOT NULL,       -- decision lines examined
    duplicate_decisions     BIGINT NOT NULL,       -- retries of an event already counted
    joined                  BIGINT NOT NULL,       -- exported: rewarded + defaulted
    rewarded                BIGINT NOT NULL,
    defaulted               BIGINT NOT NULL,
    skipped                 BIGINT NOT NULL,       -- skipped_no_reward + skipped_not_activated
    skipped_no_reward       BIGINT NOT NULL,
    skipped_not_activated   BIGINT NOT NULL,
    train_events            BIGINT NOT NULL,
    eval_events             BIGINT NOT NULL,
    rewards_used            BIGINT NOT NULL,
    late_rewards            BIGINT NOT NULL,       -- after the window, or after the join
    early_rewards           BIGINT NOT NULL,       -- before the window's start
    orphan_rewards          BIGINT NOT NULL,       -- no decision with that event id
    duplicate_rewards       BIGINT NOT NULL,
    train_key               VARCHAR NOT NULL,
    eval_key                VARCHAR NOT NULL
);
