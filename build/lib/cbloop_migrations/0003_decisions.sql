-- One row per decision line as logged (a client retry with the same event id gives several
-- rows; the join counts an event once). The line's bytes stay in its immutable segment file,
-- addressed by (segment_id, line_no), from which the export copies them through untouched;
-- this table holds what the join and the reports compute with.
-- Extracted columns are nullable only because ingest parses inside its INSERT and moves
-- unusable rows to rejected_lines before the transaction commits: committed rows are complete.
CREATE TABLE decisions (
    batch_id       INTEGER NOT NULL,
    segment_id     INTEGER NOT NULL,
    line_no        INTEGER NOT NULL,   -- 1-based line of the segment file
    event_id       VARCHAR USING COMPRESSION zstd,  -- unique ids: zstd writes cheaper than FSST
    ts             TIMESTAMP,          -- UTC
    experiment     VARCHAR,
    model_id       VARCHAR,
    chosen_action  INTEGER,            -- a[0]: 1-based position in _multi
    p_chosen       DOUBLE,             -- p[0]: logged probability of the chosen action
    p_max          DOUBLE,             -- max(p); p_chosen below it means an exploratory pick
    n_actions      INTEGER,
    sample_prob    DOUBLE,             -- fixes the train/eval split
    deferred       BOOLEAN
);
