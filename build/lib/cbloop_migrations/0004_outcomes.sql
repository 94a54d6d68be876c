-- One row per outcome line as logged: rewards, and activations of deferred decisions.
-- Nullable columns for the same reason as in decisions: committed rows are complete.
CREATE TABLE outcomes (
    batch_id         INTEGER NOT NULL,
    segment_id       INTEGER NOT NULL,
    line_no          INTEGER NOT NULL,
    event_id         VARCHAR USING COMPRESSION zstd,
    ts               TIMESTAMP,   -- UTC
    kind             VARCHAR,     -- reward | activate
    value            DOUBLE,      -- rewards only
    idempotency_key  VARCHAR      -- the request's Idempotency-Key header, if any
);
