"""Personalizer's request and response bodies, field for field as its REST reference has them.

From the swaggers of Azure/azure-rest-api-specs
(specification/cognitiveservices/data-plane/Personalizer: stable/v1.0, preview/v1.1-preview.x,
preview/2022-09-01-preview): camelCase names on the wire (snake_case here, through
`to_camel`), `contextFeatures` and `features` as lists of objects, ids and event ids up to
256 characters. Optional fields may also be sent as `null` (the official SDKs do). Unknown
fields are refused, as cbloop's native bodies are: a misspelt `excludedActions` must not
pass silently.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

MAX_ID_LENGTH = 256


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def wire(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True)


class RankableAction(_Wire):
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH, description="Id of the action.")
    features: list[Any] | None = Field(
        None, description="List of objects holding the action's features."
    )


class RankRequest(_Wire):
    context_features: list[Any] | None = Field(
        None, description="List of objects holding the context's features."
    )
    actions: list[RankableAction] = Field(min_length=1, description="The candidates.")
    excluded_actions: list[str] | None = Field(
        None, description="Ids of actions that must not be chosen."
    )
    event_id: str | None = Field(
        None, max_length=MAX_ID_LENGTH, description="Generated when absent."
    )
    defer_activation: bool | None = Field(
        None, description="Learn from the event only once it is activated."
    )


class RankedAction(_Wire):
    id: str
    probability: float


class RankResponse(_Wire):
    ranking: list[RankedAction]
    event_id: str
    reward_action_id: str


class RewardRequest(_Wire):
    value: Annotated[float, Field(strict=True, allow_inf_nan=False)] = Field(
        description="The reward of the event's rewardActionId."
    )


class ServiceConfiguration(_Wire):
    """Personalizer's service configuration (every field of 2022-09-01-preview)."""

    reward_wait_time: str | None = None
    default_reward: Annotated[float, Field(allow_inf_nan=False)] | None = None
    reward_aggregation: str | None = None
    exploration_percentage: float | None = Field(None, ge=0, le=1)
    model_export_frequency: str | None = None
    log_retention_days: int | None = Field(None, ge=-1)
    learning_mode: str | None = None
    log_mirror_enabled: bool | None = None
    log_mirror_sas_uri: str | None = None
    last_configuration_edit_date: str | None = None
    is_auto_optimization_enabled: bool | None = None
    auto_optimization_frequency: str | None = None
    auto_optimization_start_date: str | None = None
    model_retrain_days: int | None = Field(None, ge=0)


class PolicyContract(_Wire):
    name: str = Field(max_length=256)
    arguments: str = Field(max_length=1024)


class ModelProperties(_Wire):
    creation_time: str | None
    last_modified_time: str | None


class EvaluationContract(_Wire):
    """An offline evaluation to run: a time range and the policies to compare."""

    name: str = Field(min_length=1, max_length=256)
    start_time: str = Field(description="ISO 8601; decisions from this time on.")
    end_time: str = Field(description="ISO 8601; decisions up to this time.")
    policies: list[PolicyContract] = Field(max_length=20)
    #: Personalizer's policy search (v1.0 and preview names); cbloop's is `cbloop search`.
    enable_offline_experimentation: bool | None = None
    enable_policy_optimization: bool | None = None


class FeatureImportanceContract(_Wire):
    """A feature importance to compute over a time range."""

    name: str = Field(min_length=1, max_length=256)
    start_time: str = Field(description="ISO 8601; decisions from this time on.")
    end_time: str = Field(description="ISO 8601; decisions up to this time.")


class PolicyReferenceContract(_Wire):
    """A policy of an evaluation, to make the experiment's settings."""

    evaluation_id: str = Field(min_length=1, max_length=256)
    policy_name: str = Field(min_length=1, max_length=256)
