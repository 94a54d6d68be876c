-- What retention (`cbloop gc`, and `cbloop loop` after each cycle) deleted, one row per item:
-- a segment key, a join's exports, an evaluation's files or a model's file. The warehouse rows
-- about these items stay (they are the history); this table says their files are gone, and
-- readers that need the files (training and evaluation read join exports) skip those items.
CREATE TABLE retention_deletions (
    kind        VARCHAR NOT NULL CHECK (kind IN ('segment', 'export', 'evaluation', 'model')),
    experiment  VARCHAR,            -- NULL for segments (shared by every experiment)
    item        VARCHAR NOT NULL,   -- segment key, join id, eval id or model id
    objects     INTEGER NOT NULL,   -- objects (files) deleted
    bytes       BIGINT NOT NULL,
    deleted_at  TIMESTAMP NOT NULL,
    reason      VARCHAR NOT NULL
);
