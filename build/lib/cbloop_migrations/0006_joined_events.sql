-- Every event a join job decided on, exported or not: the ledger that keeps an event from
-- being learned twice and lets later rewards be recognised as late.
CREATE TABLE joined_events (
    job_seq      INTEGER NOT NULL,
    experiment   VARCHAR NOT NULL,
    event_id     VARCHAR NOT NULL USING COMPRESSION zstd,
    ts           TIMESTAMP NOT NULL,     -- the decision's time
    status       VARCHAR NOT NULL,       -- rewarded | defaulted | skipped_no_reward | skipped_not_activated
    reward       DOUBLE,                 -- the label's reward (NULL when skipped)
    n_rewards    INTEGER NOT NULL,       -- distinct rewards aggregated into it
    split        VARCHAR                 -- train | eval (NULL when skipped)
);

-- Rewards that were not learned from, each with its reason; together with
-- joined_events.n_rewards this accounts for every reward of every decided event.
CREATE TABLE unused_rewards (
    job_seq      INTEGER NOT NULL,
    experiment   VARCHAR,                -- NULL for orphans (no decision to tell it)
    event_id     VARCHAR NOT NULL,
    ts           TIMESTAMP NOT NULL,     -- the reward's time
    value        DOUBLE,
    batch_id     INTEGER NOT NULL,
    reason       VARCHAR NOT NULL        -- after_window | after_join | before_window | duplicate
                                         -- | not_activated | orphan
);
