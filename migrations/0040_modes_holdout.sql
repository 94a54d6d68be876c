-- Learning modes and the control holdout (issue 12): what each decision line records about
-- how it was served. Lines logged before these keys existed read as online, not held out.
ALTER TABLE decisions ADD COLUMN mode VARCHAR;            -- online | apprentice | logging_only
ALTER TABLE decisions ADD COLUMN holdout BOOLEAN;         -- served by holdout.policy, not the bandit
ALTER TABLE decisions ADD COLUMN unit_id VARCHAR;         -- what the holdout assignment hashed
ALTER TABLE decisions ADD COLUMN holdout_share DOUBLE;    -- holdout.share when it was decided
ALTER TABLE decisions ADD COLUMN baseline_action INTEGER; -- the app's own choice: 1-based in _multi

-- An apprentice experiment that graduated: the loop switched it to online with this evidence.
-- The loop serves and trains the experiment as online from the next cycle on.
CREATE TABLE graduations (
    experiment      VARCHAR NOT NULL,
    graduated_at    TIMESTAMP NOT NULL,
    model_id        VARCHAR NOT NULL,   -- the bandit that showed it beats the baseline
    eval_id         VARCHAR NOT NULL,   -- the evaluation the estimate came from
    estimator       VARCHAR NOT NULL,   -- dr | ips | snips
    estimate        DOUBLE NOT NULL,
    lower_bound     DOUBLE NOT NULL,
    baseline_value  DOUBLE NOT NULL,
    margin          DOUBLE NOT NULL,
    n_events        BIGINT NOT NULL,
    evidence        VARCHAR NOT NULL    -- the whole assessment as JSON
);
