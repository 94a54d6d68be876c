-- The dashboard's queries. report_events: one row per logged event (the first line of an event
-- id wins) with what the joins made of it. report_cells: sufficient statistics per experiment,
-- model and hour, which roll up exactly to coarser groups. report_hourly / report_by_model /
-- report_by_experiment: the figures. Mean reward is over learned events (rewarded or
-- defaulted), with a normal-approximation 95% interval.
CREATE VIEW report_events AS
WITH facts AS (
    SELECT
        experiment,
        event_id,
        min(ts) AS ts,
        arg_min(model_id, ts) AS model_id,
        arg_min(p_chosen, ts) AS p_chosen,
        arg_min(p_max, ts) AS p_max
    FROM decisions
    GROUP BY experiment, event_id
),
late AS (
    SELECT experiment, event_id, count(*) AS late_rewards
    FROM unused_rewards
    WHERE reason IN ('after_window', 'after_join')
    GROUP BY experiment, event_id
)
SELECT
    f.experiment,
    f.model_id,
    date_trunc('hour', f.ts) AS hour,
    f.event_id,
    f.p_chosen,
    -- The policy put more mass on another action, so this pick was exploration.
    f.p_chosen < f.p_max AS explored,
    j.status,
    j.reward,
    coalesce(l.late_rewards, 0) AS late_rewards
FROM facts f
LEFT JOIN joined_events j ON j.experiment = f.experiment AND j.event_id = f.event_id
LEFT JOIN late l ON l.experiment = f.experiment AND l.event_id = f.event_id;

CREATE VIEW report_cells AS
SELECT
    experiment,
    model_id,
    hour,
    count(*) AS decisions,
    count(status) AS closed,
    count(*) FILTER (WHERE status = 'rewarded') AS rewarded,
    count(reward) AS learned,
    coalesce(sum(reward), 0) AS reward_sum,
    coalesce(sum(reward * reward), 0) AS reward_sumsq,
    count(*) FILTER (WHERE explored) AS explored,
    sum(p_chosen) AS probability_sum,
    sum(late_rewards)::BIGINT AS late_rewards
FROM report_events
GROUP BY experiment, model_id, hour;

-- Half-width of the 95% interval of a mean from n, sum and sum of squares (NULL below n = 2).
CREATE MACRO report_ci95(n, s, ss) AS
    CASE WHEN n >= 2 THEN 1.96 * sqrt(greatest((ss - s * s / n) / (n - 1), 0) / n) END;

CREATE VIEW report_hourly AS
SELECT
    experiment, model_id, hour,
    decisions,
    closed,
    rewarded,
    rewarded / nullif(closed, 0) AS share_rewarded,
    learned,
    reward_sum / nullif(learned, 0) AS mean_reward,
    reward_sum / nullif(learned, 0) - report_ci95(learned, reward_sum, reward_sumsq) AS mean_reward_low,
    reward_sum / nullif(learned, 0) + report_ci95(learned, reward_sum, reward_sumsq) AS mean_reward_high,
    explored / decisions AS share_explored,
    probability_sum / decisions AS mean_probability,
    late_rewards
FROM report_cells;

CREATE VIEW report_by_model AS
WITH g AS (
    SELECT
        experiment, model_id,
        min(hour) AS first_hour, max(hour) AS last_hour,
        sum(decisions)::BIGINT AS decisions, sum(closed)::BIGINT AS closed,
        sum(rewarded)::BIGINT AS rewarded, sum(learned)::BIGINT AS learned,
        sum(reward_sum) AS reward_sum, sum(reward_sumsq) AS reward_sumsq,
        sum(explored)::BIGINT AS explored, sum(probability_sum) AS probability_sum,
        sum(late_rewards)::BIGINT AS late_rewards
    FROM report_cells
    GROUP BY experiment, model_id
)
SELECT
    experiment, model_id, first_hour, last_hour,
    decisions,
    closed,
    rewarded,
    rewarded / nullif(closed, 0) AS share_rewarded,
    learned,
    reward_sum / nullif(learned, 0) AS mean_reward,
    reward_sum / nullif(learned, 0) - report_ci95(learned, reward_sum, reward_sumsq) AS mean_reward_low,
    reward_sum / nullif(learned, 0) + report_ci95(learned, reward_sum, reward_sumsq) AS mean_reward_high,
    explored / decisions AS share_explored,
    probability_sum / decisions AS mean_probability,
    late_rewards
FROM g;

CREATE VIEW report_by_experiment AS
WITH g AS (
    SELECT
        experiment,
        min(hour) AS first_hour, max(hour) AS last_hour,
        count(DISTINCT model_id) AS models,
        sum(decisions)::BIGINT AS decisions, sum(closed)::BIGINT AS closed,
        sum(rewarded)::BIGINT AS rewarded, sum(learned)::BIGINT AS learned,
        sum(reward_sum) AS reward_sum, sum(reward_sumsq) AS reward_sumsq,
        sum(explored)::BIGINT AS explored, sum(probability_sum) AS probability_sum,
        sum(late_rewards)::BIGINT AS late_rewards
    FROM report_cells
    GROUP BY experiment
)
SELECT
    experiment, models, first_hour, last_hour,
    decisions,
    closed,
    rewarded,
    rewarded / nullif(closed, 0) AS share_rewarded,
    learned,
    reward_sum / nullif(learned, 0) AS mean_reward,
    reward_sum / nullif(learned, 0) - report_ci95(learned, reward_sum, reward_sumsq) AS mean_reward_low,
    reward_sum / nullif(learned, 0) + report_ci95(learned, reward_sum, reward_sumsq) AS mean_reward_high,
    explored / decisions AS share_explored,
    probability_sum / decisions AS mean_probability,
    late_rewards
FROM g;
