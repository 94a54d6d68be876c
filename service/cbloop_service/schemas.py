"""Request and response bodies of the HTTP API.

Everything that could make a malformed DSJSON line, or upset VW, is refused here before
any work is done:
- VW's JSON parser gives keys starting with "_" special meaning (`_multi`, `_text`,
  `_label...`) at every nesting level, and "ActionId" is the namespace cbloop adds to every
  action, so neither may come from a client.
- VW indexes a namespace by the first byte of its name and reserves the bytes from 0x80 up
  for its own namespaces; a name starting with a non-ASCII character corrupts VW's memory
  (found by the schemathesis test: the worker crashed). Names must start with an ASCII
  letter or digit.
- VW holds feature values as 32-bit floats (about 7 significant digits) and multiplies them
  in interactions; its updates also scale with the value squared. A single 1e12 among values
  near 1 left every weight (and the DR estimate that gates promotion) meaningless, so numbers
  are bounded by 1e6: a quadratic interaction stays at 1e12 and its square at 1e24, far from
  float32's 3.4e38, and integers (counts, prices in cents, ids) up to a million stay exact.
  Larger magnitudes belong in a log or a bucket (a string feature).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, TypeAlias, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    field_validator,
)

from cbloop.encoding import ACTION_NS

EVENT_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,256}$"
MAX_EVENT_ID_LENGTH = 256
MAX_NAME_LENGTH = 256
#: Largest magnitude of a numeric feature value (see the module docstring).
MAX_FEATURE_MAGNITUDE = 1e6

EventId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_EVENT_ID_LENGTH, pattern=EVENT_ID_PATTERN),
]


def _describe_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _feature_value(value: Any) -> str | int | float | bool:
    # One plain validator instead of a Union: a Union reports one error per member, which
    # buries the actual problem; this reports one message at the feature's location.
    if isinstance(value, str | bool):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"feature value must be a finite number, not {value!r}")
        if not -MAX_FEATURE_MAGNITUDE <= value <= MAX_FEATURE_MAGNITUDE:
            raise ValueError(
                f"feature value must be between -{MAX_FEATURE_MAGNITUDE:g} and "
                f"{MAX_FEATURE_MAGNITUDE:g}, not {value:g}"
            )
        return value
    raise ValueError(
        f"feature value must be a string, a finite number or a boolean, not {_describe_type(value)}"
    )


def _name(kind: str) -> Any:
    def check(name: str) -> str:
        if name.startswith("_"):
            raise ValueError(f"{kind} name {name!r} must not start with '_'")
        if name == ACTION_NS:
            raise ValueError(f"{kind} name {ACTION_NS!r} is reserved for the action id")
        if kind == "namespace" and not (name[0].isascii() and name[0].isalnum()):
            raise ValueError(f"namespace name {name!r} must start with an ASCII letter or digit")
        return name

    return AfterValidator(check)


FeatureValue: TypeAlias = Annotated[
    str | int | float | bool,
    PlainValidator(_feature_value),
    WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
        mode="validation",
    ),
]
FeatureName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH), _name("feature")
]
NamespaceName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH), _name("namespace")
]
Features: TypeAlias = dict[FeatureName, FeatureValue]
Namespaces: TypeAlias = dict[NamespaceName, Features]
ActionIdStr = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH)]
ExperimentName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME_LENGTH, pattern=r"^[A-Za-z0-9._-]+$")
]


class _Body(BaseModel):
    # A misspelt optional field ("exclude_actions") must fail loudly, not be dropped.
    model_config = ConfigDict(extra="forbid")


class Action(_Body):
    id: ActionIdStr = Field(
        description="The action's id, unique in the request; any string up to 256 characters.",
        examples=["article-42"],
    )
    features: Namespaces = Field(
        {},
        description="The action's own features: namespace -> feature -> value.",
        examples=[{"item": {"topic": "cooking", "length_min": 12}}],
    )


_RANK_EXAMPLE: dict[str, Any] = {
    "experiment": "default",
    "event_id": "e-2026-0001",
    "context": {"user": {"country": "fr", "age": 31, "premium": True}},
    "actions": [
        {"id": "cooking", "features": {"item": {"topic": "food", "length_min": 12}}},
        {"id": "sports", "features": {"item": {"topic": "sport", "length_min": 4}}},
        {"id": "politics", "features": {"item": {"topic": "news", "length_min": 7}}},
    ],
    "excluded_actions": ["politics"],
    "defer_activation": False,
    "baseline_action": "cooking",
    "unit_id": "user-8812",
}


class RankRequest(_Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_RANK_EXAMPLE]})

    experiment: ExperimentName = Field(
        "default", description="Which configured experiment decides.", examples=["default"]
    )
    event_id: EventId | None = Field(
        None,
        description="Generated when absent; the same id always gives the same choice.",
        examples=["e-2026-0001"],
    )
    context: Namespaces = Field(
        description=(
            "Shared features of the decision: namespace -> feature -> value. A value is a "
            "string (categorical), a number in [-1e6, 1e6] or a boolean."
        ),
        examples=[{"user": {"country": "fr", "age": 31, "premium": True}}],
    )
    actions: list[Action] = Field(
        min_length=1,
        description="The candidates, each with a unique id and its own features.",
        examples=[_RANK_EXAMPLE["actions"]],
    )
    excluded_actions: list[ActionIdStr] = Field(
        [],
        description="Ids that must not be chosen now; they are not logged and rank last.",
        examples=[["politics"]],
    )
    defer_activation: bool = Field(
        False,
        description=(
            "Log the decision but learn from it only after POST /v1/events/{event_id}/activate."
        ),
        examples=[False],
    )
    baseline_action: ActionIdStr | None = Field(
        None,
        description=(
            "What the app would show without cbloop (its own choice): served as is in "
            "`logging_only` mode, most of the time in `apprentice` mode, and to a `baseline` "
            "holdout. Must be one of `actions` and not excluded; default: the first eligible "
            "action."
        ),
        examples=["cooking"],
    )
    unit_id: EventId | None = Field(
        None,
        description=(
            "The unit the holdout is assigned by (e.g. the user id): the same unit is always "
            "in or always out of the holdout. Default: the event id."
        ),
        examples=["user-8812"],
    )

    @field_validator("actions")
    @classmethod
    def _unique_ids(cls, actions: list[Action]) -> list[Action]:
        seen: set[str] = set()
        for action in actions:
            if action.id in seen:
                raise ValueError(f"duplicate action id {action.id!r}")
            seen.add(action.id)
        return actions


class RankedAction(BaseModel):
    id: str = Field(description="An action id from the request.", examples=["cooking"])
    probability: float = Field(
        description="Its probability under the policy (0 for an excluded action).",
        examples=[0.93],
    )


class RankResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "event_id": "e-2026-0001",
                    "experiment": "default",
                    "model_id": "m-20261122T120000-1a2b",
                    "action_id": "cooking",
                    "probability": 0.93,
                    "ranking": [
                        {"id": "cooking", "probability": 0.93},
                        {"id": "sports", "probability": 0.07},
                        {"id": "politics", "probability": 0.0},
                    ],
                    "mode": "online",
                    "holdout": False,
                    "unit_id": "user-8812",
                }
            ]
        }
    )

    event_id: str = Field(
        description="Send rewards and activations for this decision to this id.",
        examples=["e-2026-0001"],
    )
    experiment: str = Field(description="The experiment that decided.", examples=["default"])
    model_id: str = Field(
        description="The model that scored the actions.", examples=["m-20261122T120000-1a2b"]
    )
    action_id: str = Field(description="The chosen action: show this one.", examples=["cooking"])
    probability: float = Field(
        description="The exact probability the choice was drawn with.", examples=[0.93]
    )
    ranking: list[RankedAction] = Field(
        description=(
            "Every action of the request: the chosen action first (equal to action_id), then "
            "the other eligible actions by decreasing probability, then the excluded ones "
            "with probability 0."
        ),
        examples=[
            [
                {"id": "cooking", "probability": 0.93},
                {"id": "sports", "probability": 0.07},
                {"id": "politics", "probability": 0.0},
            ]
        ],
    )
    mode: str = Field(
        description="The experiment's learning mode: online, apprentice or logging_only.",
        examples=["online"],
    )
    holdout: bool = Field(
        description=(
            "True when the decision went to the control group (holdout.policy served it, "
            "not the bandit)."
        ),
        examples=[False],
    )
    unit_id: str = Field(
        description="The unit the holdout assignment used (the request's, or the event id).",
        examples=["user-8812"],
    )


class RewardRequest(_Body):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"value": 1.0, "experiment": "default"}]}
    )

    value: Annotated[float, Field(strict=True, allow_inf_nan=False)] = Field(
        description=(
            "The reward (higher is better), a finite number within the experiment's "
            "[reward.min, reward.max] (default [-1e6, 1e6])."
        ),
        examples=[1.0],
    )
    experiment: ExperimentName | None = Field(
        None,
        description=(
            "The decision's experiment, to check the value against its reward range; when "
            "absent, the widest range of all configured experiments applies."
        ),
        examples=["default"],
    )


class OutcomeAccepted(BaseModel):
    event_id: str = Field(description="The event the outcome was logged for.", examples=["e-1"])
    kind: str = Field(description="'reward' or 'activate'.", examples=["reward"])


class RefusedModel(BaseModel):
    model_id: str
    reason: str
    at: str


class ModelInfo(BaseModel):
    experiment: str
    model_id: str
    loaded_at: str
    vw_args: str
    state: str = Field(description="Registry state of the serving model, or 'fallback'.")
    pointer_model_id: str | None = Field(
        description="What the registry's current pointer names (differs after a refusal)."
    )
    refused: list[RefusedModel] = Field(description="Models this worker refused, newest last.")
    behind_pointer: bool = Field(
        description=(
            "True while the served model may lag the pointer: polls of the pointer fail "
            "(see watch_error), or it names a model neither serving nor refused."
        )
    )
    watch_error: str | None = Field(
        description="Why the last poll of the pointer failed; null once a poll works."
    )
    watch_error_at: str | None = Field(description="When that poll failed.")
    worker_pid: int


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    models: dict[str, str]
    log_writable: bool
    log_problem: str | None = Field(
        None, description="Why the event log cannot take a line now (full disk, write errors)."
    )
    behind_pointer: list[str] = Field(
        [],
        description=(
            "Experiments whose served model may lag the registry pointer. Reported, but the "
            "worker stays ready: it still serves a checked model."
        ),
    )


class FieldError(BaseModel):
    field: str
    message: str


Body = TypeVar("Body", bound=BaseModel)


def parse_body(model: type[Body], raw: bytes) -> Body:
    """Validate raw JSON bytes in one pass (pydantic's own parser, no json.loads first).

    Failures become the same RequestValidationError FastAPI raises for its own bodies, so
    one handler answers both.
    """
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {
                "type": e["type"],
                "loc": ("body", *e["loc"]),
                "msg": e["msg"],
                "ctx": e.get("ctx", {}),
            }
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise RequestValidationError(errors) from None


class ErrorBody(BaseModel):
    error: str
    detail: str
    errors: list[FieldError] = []
