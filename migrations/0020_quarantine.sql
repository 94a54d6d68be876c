-- Why each line in rejected_lines was quarantined: the first rule of the event contract it
-- breaks (cbloop_pipeline.validate). Keyed like rejected_lines, which keeps the line's text.
CREATE TABLE quarantine_reasons (
    segment_id  INTEGER NOT NULL,
    line_no     INTEGER NOT NULL,
    batch_id    INTEGER NOT NULL,
    kind        VARCHAR NOT NULL CHECK (kind IN ('decisions', 'outcomes')),
    reason      VARCHAR NOT NULL
);

-- Every quarantined line with where it came from and why; lines rejected before this
-- migration have no recorded reason.
CREATE VIEW quarantined_lines AS
SELECT
    r.segment_id,
    s.key AS segment_key,
    s.kind,
    r.line_no,
    r.batch_id,
    coalesce(q.reason, 'rejected before reasons were recorded') AS reason,
    try(json_extract_string(r.line, '$.experiment')) AS experiment,
    r.line
FROM rejected_lines r
JOIN ingested_segments s USING (segment_id)
LEFT JOIN quarantine_reasons q USING (segment_id, line_no);
