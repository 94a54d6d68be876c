-- Ingest bookkeeping. A segment's row here is written in the same transaction as its lines,
-- so "is this segment loaded?" and "are its lines in the tables?" can never disagree.
CREATE TABLE ingest_batches (
    batch_id        INTEGER PRIMARY KEY,
    started_at      TIMESTAMP NOT NULL,
    finished_at     TIMESTAMP NOT NULL,
    segments        INTEGER NOT NULL,
    decision_lines  BIGINT NOT NULL,
    outcome_lines   BIGINT NOT NULL,
    rejected_lines  BIGINT NOT NULL
);

CREATE TABLE ingested_segments (
    segment_id      INTEGER PRIMARY KEY,
    key             VARCHAR NOT NULL UNIQUE,   -- object-store key: events/<kind>/.../<name>.jsonl
    kind            VARCHAR NOT NULL CHECK (kind IN ('decisions', 'outcomes')),
    batch_id        INTEGER NOT NULL,
    size_bytes      BIGINT NOT NULL,
    lines           BIGINT NOT NULL,           -- lines loaded
    rejected_lines  BIGINT NOT NULL,           -- lines kept in rejected_lines instead
    ingested_at     TIMESTAMP NOT NULL
);

-- Lines that are not a valid decision/outcome; kept verbatim so nothing is silently dropped.
CREATE TABLE rejected_lines (
    segment_id  INTEGER NOT NULL,
    line_no     INTEGER NOT NULL,
    batch_id    INTEGER NOT NULL,
    line        VARCHAR NOT NULL
);
