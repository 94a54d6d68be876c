"""Personalizer's service configuration and policy <-> cbloop experiment settings.

One table of what maps to what; the routes read settings through `service_configuration`
and `policy`, and turn a Personalizer write into cbloop settings changes (dotted keys of an
experiment's settings, e.g. `reward.wait_seconds`) with `configuration_changes` and
`policy_changes`, which an `ExperimentWriter` applies.

* `rewardWaitTime` (ISO 8601 duration, e.g. `PT10M`): `reward.wait_seconds`.
* `defaultReward`: `reward.default` (null: unrewarded events are skipped).
* `rewardAggregation`: `reward.aggregation` (Personalizer's `average` is cbloop's `mean`).
* `explorationPercentage`: `exploration.epsilon` with `exploration.type: egreedy`
  (Personalizer explored epsilon-greedily); null while the experiment explores otherwise
  (SquareCB, softmax).
* `learningMode` `Online` / `Apprentice` / `LoggingOnly`: `mode` `online` / `apprentice` /
  `logging_only` (apprentice's own exploration is `apprentice.epsilon`).
* `modelExportFrequency`: read only, `service.model_poll_seconds` (how soon workers take a
  new model).
* `logRetentionDays`: read only, `retention.joined_segments_days` (-1: kept forever).
* policy `arguments`: `vw_args` (learning flags, through cbloop's whitelist) and `exploration`
  (from `--epsilon`, `--bag`, `--cover`, `--softmax`/`--lambda`, `--squarecb`/`--gamma_scale`);
  `--cb_explore_adf` is implied. Policy `name`: the experiment's name (read only).

Fields Personalizer had and cbloop does not (log mirroring, auto-optimisation, model
retrain days) are answered with their "off" values and refused when set to anything else.
"""

from __future__ import annotations

import math
import shlex
from datetime import timedelta
from typing import Any

import isodate

from cbloop.errors import InvalidInput
from cbloop.settings import ExperimentSettings, Settings
from cbloop.vwargs import VWArgsError, validate_user_args
from cbloop_service.personalizer.schemas import PolicyContract, ServiceConfiguration

LEARNING_MODES = {"Online": "online", "Apprentice": "apprentice", "LoggingOnly": "logging_only"}
_MODE_NAMES = {v: k for k, v in LEARNING_MODES.items()}
#: Personalizer aggregation name -> cbloop's; the rest are the same word.
_AGGREGATIONS = {"earliest": "earliest", "average": "mean", "sum": "sum"}
_AGGREGATION_NAMES = {"earliest": "earliest", "mean": "average"}
_CBLOOP_AGGREGATIONS = ("earliest", "latest", "sum", "mean", "min", "max")
#: Exploration types whose `epsilon` is the share of explored decisions.
_EPSILON_TYPES = ("egreedy", "bag", "cover")


class ConfigurationError(InvalidInput):
    """A Personalizer configuration or policy value with no cbloop meaning."""


def duration_text(seconds: float) -> str:
    return str(isodate.duration_isoformat(timedelta(seconds=seconds)))


def duration_seconds(text: str, field: str) -> float:
    try:
        value = isodate.parse_duration(text)
    except (isodate.ISO8601Error, ValueError) as exc:
        raise ConfigurationError(
            f"{field}: {text!r} is not an ISO 8601 duration (e.g. PT10M): {exc}"
        ) from None
    if not isinstance(value, timedelta):
        # Years and months have no fixed length in seconds.
        raise ConfigurationError(f"{field}: use days, hours, minutes or seconds, not {text!r}")
    return value.total_seconds()


def learning_mode(experiment: ExperimentSettings) -> str:
    return _MODE_NAMES[experiment.mode]


def service_configuration(
    settings: Settings, experiment: ExperimentSettings
) -> ServiceConfiguration:
    """`experiment`'s settings (as the worker holds them now) with the service-wide ones."""
    e = experiment.exploration
    retention = settings.retention.joined_segments_days
    return ServiceConfiguration(
        reward_wait_time=duration_text(experiment.reward.wait_seconds),
        default_reward=experiment.reward.default,
        reward_aggregation=_AGGREGATION_NAMES.get(
            experiment.reward.aggregation, experiment.reward.aggregation
        ),
        exploration_percentage=e.epsilon if e.type in _EPSILON_TYPES else None,
        model_export_frequency=duration_text(settings.service.model_poll_seconds),
        log_retention_days=-1 if retention is None else math.ceil(retention),
        learning_mode=learning_mode(experiment),
        log_mirror_enabled=False,
        is_auto_optimization_enabled=False,
        model_retrain_days=0,
    )


def configuration_changes(
    body: ServiceConfiguration, settings: Settings, experiment: ExperimentSettings
) -> dict[str, Any]:
    """The cbloop settings changes a Personalizer configuration write asks for.

    Fields left out (or null) keep their value; read-only fields must be left out or equal
    what cbloop reports.
    """
    current = service_configuration(settings, experiment)
    changes: dict[str, Any] = {}
    if body.reward_wait_time is not None:
        seconds = duration_seconds(body.reward_wait_time, "rewardWaitTime")
        if seconds != experiment.reward.wait_seconds:
            changes["reward.wait_seconds"] = seconds
    if "default_reward" in body.model_fields_set and (
        body.default_reward != experiment.reward.default
    ):
        changes["reward.default"] = body.default_reward
    if body.reward_aggregation is not None:
        text = body.reward_aggregation.strip().lower()
        aggregation = _AGGREGATIONS.get(text, text)
        if aggregation not in _CBLOOP_AGGREGATIONS:
            known = ", ".join(["average", *_CBLOOP_AGGREGATIONS])
            raise ConfigurationError(f"rewardAggregation: {text!r} is not one of {known}")
        if aggregation != experiment.reward.aggregation:
            changes["reward.aggregation"] = aggregation
    if body.exploration_percentage is not None:
        e = experiment.exploration
        if e.type not in _EPSILON_TYPES:
            changes["exploration.type"] = "egreedy"
        if body.exploration_percentage != e.epsilon or e.type not in _EPSILON_TYPES:
            changes["exploration.epsilon"] = body.exploration_percentage
    if body.learning_mode is not None:
        if body.learning_mode not in LEARNING_MODES:
            known = ", ".join(LEARNING_MODES)
            raise ConfigurationError(f"learningMode: {body.learning_mode!r} is not one of {known}")
        if body.learning_mode != current.learning_mode:
            changes["mode"] = LEARNING_MODES[body.learning_mode]
    for field, wire, off in (
        ("model_export_frequency", "modelExportFrequency", current.model_export_frequency),
        ("log_retention_days", "logRetentionDays", current.log_retention_days),
        ("log_mirror_enabled", "logMirrorEnabled", False),
        ("log_mirror_sas_uri", "logMirrorSasUri", None),
        ("is_auto_optimization_enabled", "isAutoOptimizationEnabled", False),
        ("model_retrain_days", "modelRetrainDays", 0),
    ):
        value = getattr(body, field)
        if value is not None and value != off:
            raise ConfigurationError(_read_only(wire, off))
    return changes


def _read_only(wire: str, value: object) -> str:
    where = {
        "modelExportFrequency": "service.model_poll_seconds in config.yaml",
        "logRetentionDays": "retention.joined_segments_days in config.yaml",
    }.get(wire)
    if where is not None:
        return f"{wire} is {value!r} in cbloop and set through {where}, not this API"
    return f"{wire}: cbloop has no such feature; leave it out or send {value!r}"


#: What Personalizer's policy reset goes back to: cbloop's default learning flags and exploration.
DEFAULT_POLICY_ARGUMENTS = ExperimentSettings().vw_arguments()


def policy(name: str, experiment: ExperimentSettings) -> PolicyContract:
    return PolicyContract(name=name, arguments=experiment.vw_arguments())


#: VW exploration flag -> (cbloop exploration type, the option its value sets).
_EXPLORATION_FLAGS = {
    "--epsilon": ("egreedy", "epsilon"),
    "--bag": ("bag", "num_policies"),
    "--cover": ("cover", "num_policies"),
    "--softmax": ("softmax", None),
    "--lambda": (None, "lambda_"),
    "--squarecb": ("squarecb", None),
    "--gamma_scale": (None, "gamma_scale"),
}
_TYPE_PRIORITY = ("bag", "cover", "softmax", "squarecb", "egreedy")


def policy_changes(arguments: str) -> dict[str, Any]:
    """Settings changes for a Personalizer policy: its VW arguments split into cbloop's parts.

    The whole experiment policy is replaced: `vw_args` gets the learning flags (checked by
    cbloop's whitelist), `exploration` what the exploration flags say (SquareCB with its
    defaults when none is given).
    """
    try:
        tokens = shlex.split(arguments)
    except ValueError as exc:
        raise ConfigurationError(f"arguments: cannot parse {arguments!r}: {exc}") from None
    learning: list[str] = []
    types: set[str] = set()
    options: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        flag, eq, inline = token.partition("=") if token.startswith("--") else (token, "", "")
        if flag in ("--cb_explore_adf", "--dsjson"):
            i += 1
            continue
        if flag in _EXPLORATION_FLAGS:
            kind, option = _EXPLORATION_FLAGS[flag]
            if kind is not None:
                types.add(kind)
            if option is not None:
                if eq:
                    raw = inline
                elif i + 1 < len(tokens):
                    i += 1
                    raw = tokens[i]
                else:
                    raise ConfigurationError(f"arguments: {flag} needs a value")
                options[option] = _number(flag, raw, integer=option == "num_policies")
            i += 1
            continue
        learning.append(token)
        i += 1
    try:
        validate_user_args(shlex.join(learning))
    except VWArgsError as exc:
        raise ConfigurationError(f"arguments: {exc}") from None
    kind = next((t for t in _TYPE_PRIORITY if t in types), "squarecb")
    changes: dict[str, Any] = {"vw_args": shlex.join(learning), "exploration.type": kind}
    changes.update({f"exploration.{k}": v for k, v in options.items()})
    return changes


def _number(flag: str, raw: str, *, integer: bool) -> float | int:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"arguments: {flag} needs a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigurationError(f"arguments: {flag} needs a finite number, not {raw!r}")
    if integer:
        if value != int(value):
            raise ConfigurationError(f"arguments: {flag} needs a whole number, not {raw!r}")
        return int(value)
    return value
