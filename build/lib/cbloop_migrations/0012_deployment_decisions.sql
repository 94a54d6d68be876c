-- Every promotion decision (promoted or not) and every rollback, with the figures and the
-- reason. Mirrored from the history in each model's registry metadata.
CREATE TABLE deployment_decisions (
    decision_id        VARCHAR PRIMARY KEY,
    experiment         VARCHAR NOT NULL,
    action             VARCHAR NOT NULL CHECK (action IN ('deploy', 'rollback')),
    model_id           VARCHAR NOT NULL,       -- the candidate, or the rollback target
    previous_model_id  VARCHAR,                -- what the pointer named before
    promoted           BOOLEAN NOT NULL,       -- the pointer moved to model_id
    forced             BOOLEAN NOT NULL,
    eval_id            VARCHAR,
    estimator          VARCHAR,
    candidate_value    DOUBLE,                 -- the figure compared (estimate or lower bound)
    deployed_value     DOUBLE,
    margin             DOUBLE,
    use_lower_bound    BOOLEAN,
    n_events           BIGINT,
    reason             VARCHAR NOT NULL,
    decided_at         TIMESTAMP NOT NULL
);
