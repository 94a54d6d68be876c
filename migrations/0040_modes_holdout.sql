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

-- Every assessment of an apprentice's bandit against the baseline (one per evaluation): how
-- often its greedy choice is the baseline, its estimate and the baseline's value, and whether
-- it graduated, with the reason.
CREATE TABLE apprentice_assessments (
    experiment      VARCHAR NOT NULL,
    assessed_at     TIMESTAMP NOT NULL,
    model_id        VARCHAR NOT NULL,
    eval_id         VARCHAR NOT NULL,
    n_events        BIGINT NOT NULL,
    imitation_rate  DOUBLE,             -- share of eval events whose greedy choice is the baseline
    estimator       VARCHAR NOT NULL,
    estimate        DOUBLE,
    lower_bound     DOUBLE,
    baseline_value  DOUBLE,             -- SNIPS of "always the baseline" on the same events
    graduate        BOOLEAN NOT NULL,
    reason          VARCHAR NOT NULL,
    evidence        VARCHAR NOT NULL    -- JSON
);
