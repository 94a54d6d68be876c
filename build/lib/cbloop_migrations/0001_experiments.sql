-- Experiments known to the warehouse and their lifecycle state. Rows appear when decisions of
-- an experiment are first ingested; the learning loop may pause or archive them.
CREATE TABLE experiments (
    name          VARCHAR PRIMARY KEY,
    state         VARCHAR NOT NULL DEFAULT 'active'
                  CHECK (state IN ('active', 'paused', 'archived')),
    created_at    TIMESTAMP NOT NULL DEFAULT (timezone('UTC', now())),
    updated_at    TIMESTAMP NOT NULL DEFAULT (timezone('UTC', now())),
    last_join_id  VARCHAR,
    last_join_at  TIMESTAMP
);
