"""Off-policy evaluation: logged feedback, estimators, target scoring, reward model."""

from cbloop_pipeline.ope.estimators import (
    DR,
    ESTIMATOR_NAMES,
    IPS,
    SNDR,
    SNIPS,
    Bootstrap,
    Estimate,
    Estimator,
    LoggingPolicyMean,
    SwitchDR,
    effective_sample_size,
    estimate_all,
    make_estimator,
    on_policy_mean,
)
from cbloop_pipeline.ope.evaluate import EvaluationResult, evaluate_file, evaluate_scores
from cbloop_pipeline.ope.features import EventFeatures, read_events_and_features
from cbloop_pipeline.ope.feedback import BanditFeedback, InvalidFeedback
from cbloop_pipeline.ope.logged import InvalidLoggedEvent, LoggedEvents, read_logged_events
from cbloop_pipeline.ope.reward_model import (
    RewardModel,
    RewardModelMismatch,
    assign_folds,
    fit_cross_fitted,
    fit_reward_model,
)
from cbloop_pipeline.ope.scoring import (
    ScoringError,
    TargetScores,
    score_file,
    score_file_per_example,
)
from cbloop_pipeline.ope.vw_io import PredictionMismatch, VWRunError

__all__ = [
    "DR",
    "ESTIMATOR_NAMES",
    "IPS",
    "SNDR",
    "SNIPS",
    "BanditFeedback",
    "Bootstrap",
    "Estimate",
    "Estimator",
    "EvaluationResult",
    "EventFeatures",
    "InvalidFeedback",
    "InvalidLoggedEvent",
    "LoggedEvents",
    "LoggingPolicyMean",
    "PredictionMismatch",
    "RewardModel",
    "RewardModelMismatch",
    "ScoringError",
    "SwitchDR",
    "TargetScores",
    "VWRunError",
    "assign_folds",
    "effective_sample_size",
    "estimate_all",
    "evaluate_file",
    "evaluate_scores",
    "fit_cross_fitted",
    "fit_reward_model",
    "make_estimator",
    "on_policy_mean",
    "read_events_and_features",
    "read_logged_events",
    "score_file",
    "score_file_per_example",
]
