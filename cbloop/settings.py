"""Typed settings: config.yaml plus CBLOOP_<SECTION>__<KEY> environment overrides.

Settings are built by `load_settings` and passed in; nothing here runs at import.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cbloop.errors import ConfigError
from cbloop.vwargs import VWArgsError, exploration_args, validate_user_args

ENV_PREFIX = "CBLOOP_"
DEFAULT_CONFIG = Path("config.yaml")


class SettingsError(ConfigError, ValueError):
    """The configuration is invalid; the message names the offending key."""

    hint = "fix config.yaml (or --config) or the CBLOOP_* environment variables"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class S3Settings(_Strict):
    bucket: str | None = None
    prefix: str = "cbloop"
    endpoint_url: str | None = None
    region: str | None = None


class StorageSettings(_Strict):
    backend: Literal["local", "s3"] = "local"
    root: Path = Path("./data")
    s3: S3Settings = S3Settings()

    @model_validator(mode="after")
    def _s3_needs_bucket(self) -> StorageSettings:
        if self.backend == "s3" and not self.s3.bucket:
            raise ValueError("storage.s3.bucket is required when storage.backend is 's3'")
        return self


#: File names under storage.root for the warehouse and the loop's lock when not set explicitly.
WAREHOUSE_FILE = "warehouse.duckdb"
LOCK_FILE = "pipeline.lock"


class WarehouseSettings(_Strict):
    #: Default (unset or null in the config): <storage.root>/warehouse.duckdb, filled in by
    #: Settings, so moving storage.root moves the warehouse with it.
    path: Path = Path("./data") / WAREHOUSE_FILE


class EventLogSettings(_Strict):
    segment_max_seconds: float = Field(60.0, gt=0)
    segment_max_bytes: int = Field(64 * 1024 * 1024, gt=1024)
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_ms: int = Field(200, gt=0)
    #: /readyz says not ready when the segment folder has less free space than this.
    min_free_bytes: int = Field(1024 * 1024, ge=0)


class ServiceSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, le=64)
    api_keys: list[str] = []
    admin_api_keys: list[str] = []
    model_poll_seconds: float = Field(1.0, gt=0)
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    max_actions: int = Field(256, ge=1)
    max_features: int = Field(4096, ge=1)
    #: What VW actually scores: every shared feature once per action, plus each action's own
    #: features and its id. One request within max_features could otherwise cost 40x another.
    max_scored_features: int = Field(65536, ge=1)

    @field_validator("api_keys", "admin_api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, v: object) -> object:
        # From the environment (e.g. compose's .env) a list is easiest written "k1,k2".
        if isinstance(v, str):
            return [key.strip() for key in v.split(",") if key.strip()]
        return v


class PipelineSettings(_Strict):
    every: str = "5m"
    #: Default (unset or null): <storage.root>/pipeline.lock, filled in by Settings.
    lock_path: Path = Path("./data") / LOCK_FILE

    @field_validator("every")
    @classmethod
    def _duration(cls, v: str) -> str:
        parse_duration(v)
        return v


class RetentionSettings(_Strict):
    """How many days to keep what the pipeline leaves behind (None: forever).

    Applied by `cbloop loop` after every cycle and by `cbloop gc`. Whatever the settings, an
    unjoined segment, the served model and the one before it (the rollback target) stay.
    """

    #: Closed event segments every join has gone past, counted from their ingest.
    joined_segments_days: float | None = Field(None, ge=0)
    #: Joined train/eval exports the newest model has learned, counted from the join.
    exports_days: float | None = Field(None, ge=0)
    #: Evaluation files (per-event Parquet, summary, plot); the warehouse keeps the figures.
    evaluations_days: float | None = Field(None, ge=0)
    #: Model files of models not served now, counted from their creation; metadata stays.
    models_days: float | None = Field(None, ge=0)

    def enabled(self) -> bool:
        return any(
            v is not None
            for v in (
                self.joined_segments_days,
                self.exports_days,
                self.evaluations_days,
                self.models_days,
            )
        )


class LoggingSettings(_Strict):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class ExplorationSettings(_Strict):
    type: Literal["egreedy", "bag", "cover", "softmax", "squarecb"] = "squarecb"
    epsilon: float = Field(0.05, ge=0, le=1)
    num_policies: int = Field(5, ge=1, le=100)
    lambda_: float = Field(10.0, gt=0)
    gamma_scale: float = Field(10.0, gt=0)


#: Default bounds of an accepted reward. VW keeps weights and costs in float32: a reward of
#: 1e308 overflows it and turns the model into NaN for good. A million either way keeps
#: squared losses (1e12) and their gradients comfortably finite while leaving room for
#: revenue-like rewards; experiments with a known range should set it tighter.
REWARD_LIMIT = 1e6


class RewardSettings(_Strict):
    wait_seconds: float = Field(600.0, ge=0)
    backward_seconds: float = Field(60.0, ge=0)
    default: float | None = 0.0
    aggregation: Literal["earliest", "latest", "sum", "mean", "min", "max"] = "earliest"
    #: The service refuses (422) rewards outside [min, max].
    min: float = Field(-REWARD_LIMIT, allow_inf_nan=False)
    max: float = Field(REWARD_LIMIT, allow_inf_nan=False)

    @model_validator(mode="after")
    def _range(self) -> RewardSettings:
        if not self.min < self.max:
            raise ValueError(f"reward.min ({self.min:g}) must be below reward.max ({self.max:g})")
        if self.default is not None and not self.min <= self.default <= self.max:
            raise ValueError(
                f"reward.default ({self.default:g}) must lie in [reward.min, reward.max]"
            )
        return self


class SplitSettings(_Strict):
    train_ratio: float = Field(0.8, gt=0, le=1)


#: The off-policy estimators (cbloop_pipeline.ope) a promotion or a graduation may rest on.
EstimatorName = Literal["ips", "snips", "dr", "sndr", "switch_dr"]


class PromotionSettings(_Strict):
    estimator: EstimatorName = "dr"
    margin: float = 0.0
    use_lower_bound: bool = False
    min_events: int = Field(100, ge=0)


class EvaluationSettings(_Strict):
    #: Evaluate candidates on the eval splits of only the newest N joins (None: every join).
    #: Fewer joins track recent traffic and give intervals about the next rounds' reward;
    #: more joins give tighter intervals about the policy's long-run value.
    recent_joins: int | None = Field(None, ge=1)


#: How an experiment serves: the bandit's choice (online), the app's own choice with a little
#: exploration while the bandit learns beside it (apprentice), or the app's choice only.
LearningMode = Literal["online", "apprentice", "logging_only"]


class GraduationSettings(_Strict):
    """When an apprentice's bandit has shown it beats the baseline, switch to online."""

    enabled: bool = True
    estimator: EstimatorName = "dr"
    #: Eval events the bandit's estimate must rest on before it may graduate.
    min_events: int = Field(500, ge=1)
    #: The bandit's lower bound must exceed the baseline's value by at least this much.
    margin: float = Field(0.0, ge=0, allow_inf_nan=False)


class ApprenticeSettings(_Strict):
    #: Share of apprentice decisions spread uniformly over the actions (0: serve only the
    #: baseline, which also means the bandit can never show it is better).
    epsilon: float = Field(0.05, ge=0, le=1)
    graduate: GraduationSettings = GraduationSettings()


class HoldoutSettings(_Strict):
    """A control group, assigned per unit (request `unit_id`, default the event id)."""

    share: float = Field(0.0, ge=0, le=0.5)
    #: What the control group is served: the request's baseline action, or a uniform draw
    #: (uniform holdout decisions are also valid off-policy evaluation data).
    policy: Literal["baseline", "uniform"] = "uniform"


class ExperimentSettings(_Strict):
    vw_args: str = "--interactions :A -b 18"
    exploration: ExplorationSettings = ExplorationSettings()
    reward: RewardSettings = RewardSettings()
    split: SplitSettings = SplitSettings()
    promotion: PromotionSettings = PromotionSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    mode: LearningMode = "online"
    apprentice: ApprenticeSettings = ApprenticeSettings()
    holdout: HoldoutSettings = HoldoutSettings()

    @field_validator("vw_args")
    @classmethod
    def _whitelisted(cls, v: str) -> str:
        try:
            validate_user_args(v)
        except VWArgsError as exc:
            raise ValueError(str(exc)) from exc
        return v

    def vw_arguments(self) -> str:
        """The full VW argument string of this experiment's policy (no I/O or format flags)."""
        e = self.exploration
        tokens = [
            "--cb_explore_adf",
            *validate_user_args(self.vw_args),
            *exploration_args(
                e.type,
                epsilon=e.epsilon,
                num_policies=e.num_policies,
                lambda_=e.lambda_,
                gamma_scale=e.gamma_scale,
            ),
        ]
        return shlex.join(tokens)


class Settings(_Strict):
    storage: StorageSettings = StorageSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    eventlog: EventLogSettings = EventLogSettings()
    service: ServiceSettings = ServiceSettings()
    pipeline: PipelineSettings = PipelineSettings()
    retention: RetentionSettings = RetentionSettings()
    logging: LoggingSettings = LoggingSettings()
    experiments: dict[str, ExperimentSettings] = {"default": ExperimentSettings()}

    @model_validator(mode="before")
    @classmethod
    def _paths_under_root(cls, data: Any) -> Any:
        """Fill warehouse.path and pipeline.lock_path from storage.root when they are unset.

        Done on the raw input because only there can "not set" (missing or null) be told
        apart from an explicit value equal to the old default; explicit values always win.
        """
        if not isinstance(data, dict):
            return data
        storage = data.get("storage")
        if isinstance(storage, StorageSettings):
            root: Any = storage.root
        elif isinstance(storage, dict) and storage.get("root") is not None:
            root = storage["root"]
        else:
            root = StorageSettings().root
        if not isinstance(root, str | Path):
            return data  # let field validation name the bad storage.root
        data = dict(data)
        for section, key, name in (
            ("warehouse", "path", WAREHOUSE_FILE),
            ("pipeline", "lock_path", LOCK_FILE),
        ):
            node = data.get(section)
            if node is None:
                node = {}
            if isinstance(node, dict) and node.get(key) is None:
                data[section] = {**node, key: Path(root) / name}
        return data

    @field_validator("experiments")
    @classmethod
    def _names(cls, v: dict[str, ExperimentSettings]) -> dict[str, ExperimentSettings]:
        for name in v:
            if not name or not all(ch.isalnum() or ch in "._-" for ch in name):
                raise ValueError(f"experiment name {name!r} may use only letters, digits, . _ -")
        if "default" not in v:
            v = {"default": ExperimentSettings(), **v}
        return v

    def experiment(self, name: str) -> ExperimentSettings:
        try:
            return self.experiments[name]
        except KeyError:
            raise SettingsError(f"unknown experiment {name!r}") from None


def parse_duration(text: str) -> float:
    """'90s', '5m', '1h', '250ms' or a bare number of seconds -> seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    t = text.strip().lower()
    for suffix in ("ms", "s", "m", "h", "d"):
        if t.endswith(suffix):
            number, factor = t[: -len(suffix)], units[suffix]
            break
    else:
        number, factor = t, 1.0
    try:
        value = float(number) * factor
    except ValueError:
        # No config hint: the text may come from a command-line option as well.
        raise SettingsError(f"invalid duration {text!r} (use e.g. 30s, 5m, 1h)", hint="") from None
    if value <= 0:
        raise SettingsError(f"duration {text!r} must be positive")
    return value


def load_settings(path: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from a YAML file (default ./config.yaml if present) and the environment."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    config_path = path if path is not None else Path(env.get("CBLOOP_CONFIG", DEFAULT_CONFIG))
    # An explicitly named file (argument or $CBLOOP_CONFIG) must exist; ./config.yaml may not.
    if path is not None or "CBLOOP_CONFIG" in env or config_path.exists():
        try:
            loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"config file {config_path} does not exist") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"config file {config_path} is not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"config file {config_path} must hold a mapping at the top")
        data = loaded or {}
    for key, raw in env.items():
        if key.startswith(ENV_PREFIX) and "__" in key:
            _apply_override(data, key, raw)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _apply_override(data: dict[str, Any], key: str, raw: str) -> None:
    parts = [p.lower() for p in key[len(ENV_PREFIX) :].split("__")]
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    text = raw.strip()
    # Scalars stay strings for pydantic to coerce ("8100" -> int): YAML-parsing them would turn
    # "--interactions :: -b 18" into a mapping and an API key "12345" into an int. Only flow
    # collections ([a, b]) and null need YAML.
    if text.startswith(("[", "{")) or text in ("null", "~"):
        try:
            node[parts[-1]] = yaml.safe_load(text)
        except yaml.YAMLError:
            node[parts[-1]] = raw
    else:
        node[parts[-1]] = raw


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = (
            f" (got {err['input']!r})"
            if "input" in err and not isinstance(err["input"], dict)
            else ""
        )
        lines.append(f"{where}: {err['msg']}{got}")
    return "invalid settings: " + "; ".join(lines)
