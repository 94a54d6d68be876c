"""Off-policy evaluation: logged feedback, estimators, target scoring, reward model."""

from cbloop_pipeline.ope.estimators import (
    DR,
    IPS,
    SNIPS,
    Estimate,
    Estimator,
    LoggingPolicyMean,
    effective_sample_size,
    estimate_all,
    on_policy_mean,
)
from cbloop_pipeline.ope.evaluate import EvaluationResult, evaluate_file, evaluate_scores
from cbloop_pipeline.ope.feedback import BanditFeedback, InvalidFeedback
from cbloop_pipeline.ope.logged import InvalidLoggedEvent, LoggedEvents, read_logged_events
from cbloop_pipeline.ope.reward_model import (
    RewardModel,
    RewardModelMismatch,
    assign_folds,
    fit_reward_model,
    reward_model_args,
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
    "IPS",
    "SNIPS",
    "BanditFeedback",
    "Estimate",
    "Estimator",
    "EvaluationResult",
    "InvalidFeedback",
    "InvalidLoggedEvent",
    "LoggedEvents",
    "LoggingPolicyMean",
    "PredictionMismatch",
    "RewardModel",
    "RewardModelMismatch",
    "ScoringError",
    "TargetScores",
    "VWRunError",
    "assign_folds",
    "effective_sample_size",
    "estimate_all",
    "evaluate_file",
    "evaluate_scores",
    "fit_reward_model",
    "on_policy_mean",
    "read_logged_events",
    "reward_model_args",
    "score_file",
    "score_file_per_example",
]
