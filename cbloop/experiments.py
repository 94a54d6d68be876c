"""Experiment definitions in the store, beside the models: versioned, with who, when and why.

Layout: `experiments/<name>/v000001.json`, `v000002.json`, ...; the highest version is the
definition in force (no pointer to keep in step with the records). Each record is written
once and never changed, so the files are the history. `config.yaml` only seeds: an
experiment it names that the store does not know is written as version 1; an experiment the
store knows keeps the store's definition whatever the file says later (a warning says so).

A change of the VW arguments (`vw_args`, or exploration settings that change
`vw_arguments()`) makes every model trained under the old ones unusable, so such a change
creates an untrained model with the new arguments and points the experiment at it, recording
why in the new version (`fresh_model_reason`, `fresh_model_id`) and in the pointer. The
record is written before the pointer moves: a worker that sees the new pointer reads the
catalog after it and so always knows the new arguments first.
"""

from __future__ import annotations

import builtins
import logging
import re
import secrets
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from cbloop.clock import format_ts
from cbloop.errors import InvalidInput
from cbloop.registry import ModelRegistry
from cbloop.settings import ExperimentSettings, Settings
from cbloop.storage.base import ObjectNotFound, ObjectStore, StorageError

logger = logging.getLogger(__name__)

PREFIX = "experiments/"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_VERSION_FILE = re.compile(r"v(\d{6,})\.json")
SEED_BY = "config.yaml"


class ExperimentError(InvalidInput):
    """A catalog request that cannot be carried out as asked."""


class InvalidExperiment(ExperimentError):
    """Settings that break the experiment contract; `errors` holds (key, message) pairs."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in errors))
        self.errors = errors


class ExperimentNotFound(ExperimentError):
    def __init__(self, name: str) -> None:
        super().__init__(f"experiment {name!r} does not exist")
        self.name = name


class ExperimentExists(ExperimentError):
    def __init__(self, name: str) -> None:
        super().__init__(f"experiment {name!r} already exists; update it instead")
        self.name = name


class ExperimentConflict(ExperimentError):
    """The change collides with the experiment's state (archived, or written concurrently)."""


class UnreadableRecord(ExperimentError):
    """A stored record that does not parse (damaged, or written by hand)."""


class ExperimentRecord(BaseModel):
    """One version of one experiment, as stored."""

    # Fields a later cbloop adds to records are ignored by this one, not fatal.
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    version: int
    #: ExperimentSettings as JSON (every key, defaults included).
    settings: dict[str, Any]
    archived: bool = False
    by: str
    at: str
    why: str
    evidence: dict[str, Any] | None = None
    #: Set when this version changed the VW arguments: why a new untrained model serves.
    fresh_model_reason: str | None = None
    fresh_model_id: str | None = None
    #: Random per write: tells this writer's record from a concurrent writer's.
    write_id: str

    def experiment(self) -> ExperimentSettings:
        return ExperimentSettings.model_validate(self.settings)


def check_name(name: str) -> str:
    if not _SAFE_NAME.fullmatch(name):
        raise InvalidExperiment(
            [("name", f"{name!r} may use only letters, digits, . _ - (at most 128)")]
        )
    return name


def validate_settings(data: Mapping[str, Any]) -> ExperimentSettings:
    """The file's own validation; errors name the key (`exploration.epsilon: ...`)."""
    try:
        return ExperimentSettings.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidExperiment(_errors(exc)) from None


def _errors(exc: ValidationError) -> list[tuple[str, str]]:
    found = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "settings"
        message = str(err["msg"]).removeprefix("Value error, ")
        if "input" in err and not isinstance(err["input"], dict):
            message += f" (got {err['input']!r})"
        found.append((key, message))
    return found


def deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`changes` over `base`; nested mappings merge, anything else (null too) replaces."""
    out = dict(base)
    for key, value in changes.items():
        current = out.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            out[key] = deep_merge(current, value)
        else:
            out[key] = value
    return out


def _dump(settings: ExperimentSettings) -> dict[str, Any]:
    return settings.model_dump(mode="json")


class ExperimentCatalog:
    """The experiments of one deployment, on its object store (local folder or S3)."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.registry = ModelRegistry(store)

    # -- reading -----------------------------------------------------------------------
    @staticmethod
    def _key(name: str, version: int) -> str:
        return f"{PREFIX}{name}/v{version:06d}.json"

    def heads(self) -> dict[str, int]:
        """Every experiment's newest version number, from one listing (what workers poll)."""
        newest: dict[str, int] = {}
        for info in self.store.list(PREFIX):
            parts = info.key[len(PREFIX) :].split("/")
            if len(parts) != 2:
                continue
            match = _VERSION_FILE.fullmatch(parts[1])
            if match is None or not _SAFE_NAME.fullmatch(parts[0]):
                continue
            newest[parts[0]] = max(newest.get(parts[0], 0), int(match.group(1)))
        return newest

    def _versions(self, name: str) -> list[int]:
        found = []
        for info in self.store.list(f"{PREFIX}{name}/"):
            match = _VERSION_FILE.fullmatch(info.key.rsplit("/", 1)[-1])
            if match is not None:
                found.append(int(match.group(1)))
        return sorted(found)

    def record(self, name: str, version: int) -> ExperimentRecord:
        key = self._key(name, version)
        try:
            raw = self.store.get_bytes(key)
        except ObjectNotFound:
            raise ExperimentNotFound(name) from None
        try:
            record = ExperimentRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise UnreadableRecord(f"stored experiment record {key} is unreadable: {exc}") from exc
        if record.name != name or record.version != version:
            raise UnreadableRecord(f"stored experiment record {key} names another version")
        return record

    def find(self, name: str) -> ExperimentRecord | None:
        """The newest version of `name` (archived or not), None when it never existed."""
        check_name(name)
        versions = self._versions(name)
        return self.record(name, versions[-1]) if versions else None

    def get(self, name: str) -> ExperimentRecord:
        record = self.find(name)
        if record is None:
            raise ExperimentNotFound(name)
        return record

    def list(self, include_archived: bool = False) -> builtins.list[ExperimentRecord]:
        """The newest version of each experiment; an unreadable one is skipped, with a warning."""
        records = []
        for name, version in sorted(self.heads().items()):
            try:
                records.append(self.record(name, version))
            except ExperimentError as exc:
                logger.warning(
                    "skipping an unreadable experiment record",
                    extra={"experiment": name, "version": version, "error": str(exc)},
                )
        return [r for r in records if include_archived or not r.archived]

    def history(self, name: str) -> builtins.list[ExperimentRecord]:
        check_name(name)
        versions = self._versions(name)
        if not versions:
            raise ExperimentNotFound(name)
        return [self.record(name, v) for v in versions]

    def active(self) -> dict[str, ExperimentSettings]:
        return {r.name: r.experiment() for r in self.list()}

    # -- writing -----------------------------------------------------------------------
    def seed(self, settings: Settings) -> builtins.list[str]:
        """Write each configured experiment the store does not know as version 1.

        Returns the names seeded. A configured experiment the store already knows is left
        as the store has it; if the file now says otherwise, a warning names it.
        """
        heads = self.heads()
        seeded = []
        for name, experiment in settings.experiments.items():
            if name not in heads:
                self._write(
                    name, 1, experiment, by=SEED_BY, why="seeded from config.yaml at first start"
                )
                seeded.append(name)
                continue
            stored = self.record(name, heads[name])
            # Compared as validated: a record written before a key existed has its default.
            if _dump(experiment) != _dump(stored.experiment()) and not stored.archived:
                logger.warning(
                    "config.yaml differs from the stored experiment; the store's version "
                    "is used (change it with `cbloop experiments update`)",
                    extra={"experiment": name, "version": stored.version},
                )
        return seeded

    def create(
        self,
        name: str,
        settings: Mapping[str, Any],
        *,
        by: str,
        why: str = "created",
        evidence: dict[str, Any] | None = None,
    ) -> ExperimentRecord:
        """A new experiment (or a new life for an archived one) with its first model."""
        check_name(name)
        experiment = validate_settings(settings)
        previous = self.find(name)
        if previous is not None and not previous.archived:
            raise ExperimentExists(name)
        version = 1 if previous is None else previous.version + 1
        if previous is None:
            # The first model before the record: a worker that sees the record finds it
            # (instead of making one of its own at the same moment).
            self.registry.ensure_initial_model(name, experiment)
        return self._write_with_model(
            name, version, experiment, previous, by=by, why=why, evidence=evidence
        )

    def update(
        self,
        name: str,
        changes: Mapping[str, Any],
        *,
        by: str,
        why: str,
        evidence: dict[str, Any] | None = None,
    ) -> ExperimentRecord:
        """Merge `changes` (a partial settings mapping) into the experiment, as a new version.

        Nothing is written when the merged settings are invalid (InvalidExperiment) or equal
        to the current ones (the current record is returned).
        """
        current = self.get(name)
        if current.archived:
            raise ExperimentConflict(
                f"experiment {name!r} is archived (version {current.version}); "
                "create it again to bring it back"
            )
        before = _dump(current.experiment())
        experiment = validate_settings(deep_merge(before, changes))
        if _dump(experiment) == before:
            return current
        return self._write_with_model(
            name, current.version + 1, experiment, current, by=by, why=why, evidence=evidence
        )

    def archive(self, name: str, *, by: str, why: str) -> ExperimentRecord:
        """Stop serving and learning `name`; its models and history stay in the store."""
        current = self.get(name)
        if current.archived:
            return current
        return self._write(
            name, current.version + 1, current.experiment(), by=by, why=why, archived=True
        )

    def _write_with_model(
        self,
        name: str,
        version: int,
        experiment: ExperimentSettings,
        previous: ExperimentRecord | None,
        *,
        by: str,
        why: str,
        evidence: dict[str, Any] | None,
    ) -> ExperimentRecord:
        """Write a version; when it changes the VW arguments, start a fresh model as well."""
        if previous is None or self.registry.current(name) is None:
            if previous is not None:  # archived before it ever had a model
                self.registry.ensure_initial_model(name, experiment)
            return self._write(name, version, experiment, by=by, why=why, evidence=evidence)
        old_args = previous.experiment().vw_arguments()
        new_args = experiment.vw_arguments()
        if old_args == new_args:
            return self._write(name, version, experiment, by=by, why=why, evidence=evidence)
        reason = (
            f"version {version} changed the VW arguments from {old_args!r} to {new_args!r}: "
            "models trained under the old ones cannot serve; a fresh model starts"
        )
        fresh = self.registry.create_fresh(name, experiment, note=reason)
        fresh.state = "deployed"
        self.registry.update_metadata(fresh)
        record = self._write(
            name,
            version,
            experiment,
            by=by,
            why=why,
            evidence=evidence,
            fresh_model_reason=reason,
            fresh_model_id=fresh.model_id,
        )
        self.registry.set_current(name, fresh.model_id, reason=f"experiment {reason}")
        logger.warning(
            "VW arguments changed; a fresh model serves",
            extra={"experiment": name, "version": version, "model_id": fresh.model_id},
        )
        return record

    def _write(
        self,
        name: str,
        version: int,
        experiment: ExperimentSettings,
        *,
        by: str,
        why: str,
        archived: bool = False,
        evidence: dict[str, Any] | None = None,
        fresh_model_reason: str | None = None,
        fresh_model_id: str | None = None,
    ) -> ExperimentRecord:
        if not why.strip():
            raise InvalidExperiment([("why", "say why the experiment changes")])
        record = ExperimentRecord(
            name=name,
            version=version,
            settings=_dump(experiment),
            archived=archived,
            by=by,
            at=format_ts(),
            why=why,
            evidence=evidence,
            fresh_model_reason=fresh_model_reason,
            fresh_model_id=fresh_model_id,
            write_id=secrets.token_hex(8),
        )
        key = self._key(name, version)
        if self.store.stat(key) is not None:
            raise ExperimentConflict(
                f"experiment {name!r} changed meanwhile (version {version} exists); try again"
            )
        self.store.put_bytes(key, record.model_dump_json(indent=2).encode())
        # Two writers that picked the same version both wrote; the one whose record did not
        # stay is told, so a change is never reported done and then lost.
        try:
            kept = self.record(name, version)
        except ExperimentNotFound as exc:
            raise StorageError(f"experiment record {key} vanished after writing") from exc
        if kept.write_id != record.write_id:
            raise ExperimentConflict(
                f"experiment {name!r} was changed concurrently (version {version}); try again"
            )
        logger.info(
            "experiment written",
            extra={"experiment": name, "version": version, "by": by, "archived": archived},
        )
        return record


def resolved_settings(settings: Settings, catalog: ExperimentCatalog) -> Settings:
    """`settings` with its experiments replaced by the store's active ones (seeding first).

    What every command that serves or learns runs on, so they all follow the catalog.
    """
    catalog.seed(settings)
    return settings.model_copy(update={"experiments": catalog.active()})
