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
- VW holds feature values as 32-bit floats and multiplies them in interactions, so
  numbers are bounded (1e12: even a cubic interaction stays finite).
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
MAX_FEATURE_MAGNITUDE = 1e12

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
    id: ActionIdStr
    features: Namespaces = {}


class RankRequest(_Body):
    experiment: ExperimentName = "default"
    event_id: EventId | None = Field(
        None, description="Generated when absent; the same id always gives the same choice."
    )
    context: Namespaces
    actions: list[Action] = Field(min_length=1)
    excluded_actions: list[ActionIdStr] = []
    defer_activation: bool = False

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
    id: str
    probability: float


class RankResponse(BaseModel):
    event_id: str
    experiment: str
    model_id: str
    action_id: str
    probability: float = Field(description="The exact probability the choice was drawn with.")
    ranking: list[RankedAction]


class RewardRequest(_Body):
    value: Annotated[float, Field(strict=True, allow_inf_nan=False)]


class OutcomeAccepted(BaseModel):
    event_id: str
    kind: str


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
    worker_pid: int


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    models: dict[str, str]
    log_writable: bool


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
