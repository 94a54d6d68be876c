-- The model registry mirrored: one row per registered model. The registry (metadata.json next
-- to each model file) is the source of truth; pipeline commands upsert these rows from it, so
-- the mirror can always be rebuilt by syncing again.
CREATE TABLE models (
    experiment        VARCHAR NOT NULL,
    model_id          VARCHAR NOT NULL,
    parent_id         VARCHAR,
    state             VARCHAR NOT NULL
                      CHECK (state IN ('trained', 'deployed', 'retired', 'refused')),
    vw_args           VARCHAR NOT NULL,
    created_at        TIMESTAMP NOT NULL,
    joins             VARCHAR[] NOT NULL,     -- joins whose train split this model learned
    events_trained    BIGINT NOT NULL,        -- examples learned by this model itself
    events_total      BIGINT NOT NULL,        -- ... and by its ancestors
    progressive_loss  DOUBLE,                 -- VW's progressive validation loss
    train_seconds     DOUBLE,
    last_eval_id      VARCHAR,
    metadata          VARCHAR NOT NULL,       -- the full metadata.json, for anything not above
    synced_at         TIMESTAMP NOT NULL,
    PRIMARY KEY (experiment, model_id)
);
