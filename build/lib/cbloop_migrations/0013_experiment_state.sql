-- The learning loop's state per experiment (as the reference's experiment table kept joining,
-- training, evaluation and hosting states): what step the current cycle is in, how each step
-- last ended, and the ids it produced. loop_steps keeps every step run as history.
CREATE TABLE experiment_state (
    experiment               VARCHAR PRIMARY KEY,
    cycle                    BIGINT NOT NULL,     -- cycles started so far
    step                     VARCHAR NOT NULL,    -- idle | ingest | join | train | evaluate | deploy
    status                   VARCHAR NOT NULL,    -- running | done | failed
    ingest_state             VARCHAR NOT NULL DEFAULT 'idle',
    join_state               VARCHAR NOT NULL DEFAULT 'idle',
    train_state              VARCHAR NOT NULL DEFAULT 'idle',
    evaluate_state           VARCHAR NOT NULL DEFAULT 'idle',
    deploy_state             VARCHAR NOT NULL DEFAULT 'idle',
    last_join_id             VARCHAR,
    last_trained_model_id    VARCHAR,
    last_evaluated_model_id  VARCHAR,
    last_eval_id             VARCHAR,
    deployed_model_id        VARCHAR,
    last_error               VARCHAR,
    cycle_started_at         TIMESTAMP,
    cycle_finished_at        TIMESTAMP,
    updated_at               TIMESTAMP NOT NULL
);

CREATE TABLE loop_steps (
    experiment   VARCHAR NOT NULL,
    cycle        BIGINT NOT NULL,
    step         VARCHAR NOT NULL,
    status       VARCHAR NOT NULL,    -- done | skipped | failed
    started_at   TIMESTAMP NOT NULL,
    finished_at  TIMESTAMP NOT NULL,
    detail       VARCHAR NOT NULL
);
