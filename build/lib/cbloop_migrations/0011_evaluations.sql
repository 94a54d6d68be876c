-- Off-policy evaluations: one row per run of `cbloop evaluate`, one row per estimate in it.
-- The per-event figures behind every estimate are in the Parquet file at events_key.
CREATE TABLE evaluations (
    eval_id                VARCHAR PRIMARY KEY,
    experiment             VARCHAR NOT NULL,
    model_id               VARCHAR NOT NULL,   -- the candidate
    deployed_model_id      VARCHAR,            -- evaluated on the same events (NULL: none)
    created_at             TIMESTAMP NOT NULL,
    joins                  VARCHAR[] NOT NULL, -- joins whose eval split was used
    n_events               BIGINT NOT NULL,
    confidence             DOUBLE NOT NULL,
    primary_estimator      VARCHAR NOT NULL,
    effective_sample_size  DOUBLE,             -- of the candidate's importance weights
    max_importance_weight  DOUBLE,
    seconds                DOUBLE,
    events_key             VARCHAR NOT NULL,
    summary_key            VARCHAR NOT NULL
);

CREATE TABLE evaluation_estimates (
    eval_id     VARCHAR NOT NULL,
    policy      VARCHAR NOT NULL CHECK (policy IN ('candidate', 'deployed', 'logging')),
    model_id    VARCHAR,                       -- NULL for the logging policy
    estimator   VARCHAR NOT NULL,              -- ips | snips | dr | logging
    value       DOUBLE,                        -- NULL when undefined (SNIPS, all weights 0)
    ci_low      DOUBLE,
    ci_high     DOUBLE,
    n           BIGINT NOT NULL,
    ess         DOUBLE,
    max_weight  DOUBLE,
    std_error   DOUBLE,
    PRIMARY KEY (eval_id, policy, estimator)
);
