"""Model registry: models/<experiment>/<model_id>/{model.vw,metadata.json} + a `current` pointer.

It sits on an ObjectStore, so the same code serves the local folder and S3. The pointer is
one small object replaced atomically, which is what lets every service worker poll it
cheaply (`pointer_version`) and swap models without coordination.
"""

from __future__ import annotations

import logging
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from cbloop.clock import compact_ts, format_ts
from cbloop.errors import InvalidInput
from cbloop.settings import ExperimentSettings
from cbloop.storage.base import ObjectNotFound, ObjectStore, StorageError
from cbloop.vw import open_workspace

logger = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
ModelState = Literal["trained", "deployed", "retired", "refused"]
MODEL_FILE = "model.vw"
METADATA_FILE = "metadata.json"


class RegistryError(InvalidInput):
    """The registry holds something unusable (missing model, bad metadata)."""


class ModelMetadata(BaseModel):
    model_config = ConfigDict(extra="allow")

    model_id: str
    experiment: str
    vw_args: str
    created_at: str
    parent_id: str | None = None
    state: ModelState = "trained"
    joins: list[str] = []
    events_trained: int = 0
    progressive_loss: float | None = None
    evaluations: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    #: Set when retention deleted the model file; the metadata stays so lineages stay whole.
    file_deleted_at: str | None = None

    def record(self, what: str, **details: Any) -> None:
        self.history.append({"at": format_ts(), "what": what, **details})


class Pointer(BaseModel):
    model_id: str
    updated_at: str
    reason: str = ""
    previous: str | None = None


class ModelRegistry:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    # -- keys --------------------------------------------------------------------------
    @staticmethod
    def _dir(experiment: str, model_id: str) -> str:
        for what, name in (("experiment", experiment), ("model id", model_id)):
            if not _SAFE_NAME.fullmatch(name):
                raise RegistryError(f"invalid {what} {name!r}: use letters, digits, . _ -")
        return f"models/{experiment}/{model_id}"

    @staticmethod
    def pointer_key(experiment: str) -> str:
        return f"models/{experiment}/current"

    @staticmethod
    def new_model_id() -> str:
        return f"m-{compact_ts()}-{secrets.token_hex(3)}"

    # -- models ------------------------------------------------------------------------
    def save(self, model_file: Path, metadata: ModelMetadata) -> ModelMetadata:
        """Store the model, then its metadata: a model without metadata is never listed."""
        base = self._dir(metadata.experiment, metadata.model_id)
        self.store.put_file(f"{base}/{MODEL_FILE}", model_file)
        self.update_metadata(metadata)
        return metadata

    def update_metadata(self, metadata: ModelMetadata) -> None:
        key = f"{self._dir(metadata.experiment, metadata.model_id)}/{METADATA_FILE}"
        self.store.put_bytes(key, metadata.model_dump_json(indent=2).encode())

    def metadata(self, experiment: str, model_id: str) -> ModelMetadata:
        key = f"{self._dir(experiment, model_id)}/{METADATA_FILE}"
        try:
            return ModelMetadata.model_validate_json(self.store.get_bytes(key))
        except ObjectNotFound:
            raise RegistryError(f"no model {model_id!r} in experiment {experiment!r}") from None
        except ValidationError as exc:
            raise RegistryError(f"metadata of {model_id!r} is unreadable: {exc}") from exc

    def fetch(self, experiment: str, model_id: str, dest_dir: Path) -> Path:
        """A local path to the model file (the file itself for a local store)."""
        key = f"{self._dir(experiment, model_id)}/{MODEL_FILE}"
        local = self.store.local_path(key)
        if local is not None:
            if not local.is_file():
                raise RegistryError(f"model file of {model_id!r} is missing")
            return local
        dest = dest_dir / f"{experiment}-{model_id}.vw"
        try:
            self.store.get_file(key, dest)
        except ObjectNotFound:
            raise RegistryError(f"model file of {model_id!r} is missing") from None
        return dest

    def list_models(self, experiment: str) -> list[ModelMetadata]:
        found = []
        for info in self.store.list(f"models/{experiment}/"):
            if info.key.endswith(f"/{METADATA_FILE}"):
                model_id = info.key.split("/")[-2]
                try:
                    found.append(self.metadata(experiment, model_id))
                except RegistryError:
                    logger.warning("skipping unreadable model metadata", extra={"key": info.key})
        return sorted(found, key=lambda m: m.created_at)

    # -- pointer -----------------------------------------------------------------------
    def current(self, experiment: str) -> Pointer | None:
        try:
            raw = self.store.get_bytes(self.pointer_key(experiment))
        except ObjectNotFound:
            return None
        try:
            return Pointer.model_validate_json(raw)
        except ValidationError as exc:
            raise RegistryError(f"pointer of experiment {experiment!r} is unreadable") from exc

    def pointer_version(self, experiment: str) -> str | None:
        info = self.store.stat(self.pointer_key(experiment))
        return info.version if info else None

    def set_current(self, experiment: str, model_id: str, reason: str) -> Pointer:
        self.metadata(experiment, model_id)  # refuse to point at a model we do not have
        old = self.current(experiment)
        pointer = Pointer(
            model_id=model_id,
            updated_at=format_ts(),
            reason=reason,
            previous=old.model_id if old else None,
        )
        self.store.put_bytes(self.pointer_key(experiment), pointer.model_dump_json().encode())
        logger.info(
            "pointer moved",
            extra={"experiment": experiment, "model_id": model_id, "previous": pointer.previous},
        )
        return pointer

    # -- bootstrap ---------------------------------------------------------------------
    def create_fresh(
        self, experiment: str, settings: ExperimentSettings, note: str
    ) -> ModelMetadata:
        """An untrained model built from the experiment's arguments."""
        args = settings.vw_arguments()
        ws = open_workspace(args)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / MODEL_FILE
            ws.save(str(path))
            ws.finish()
            meta = ModelMetadata(
                model_id=self.new_model_id(),
                experiment=experiment,
                vw_args=args,
                created_at=format_ts(),
            )
            meta.record("created", note=note)
            return self.save(path, meta)

    def ensure_initial_model(self, experiment: str, settings: ExperimentSettings) -> Pointer:
        """Give an experiment with no current model a fresh one, so serving always has an id."""
        pointer = self.current(experiment)
        if pointer is not None:
            return pointer
        meta = self.create_fresh(experiment, settings, note="initial model")
        meta.state = "deployed"
        self.update_metadata(meta)
        try:
            return self.set_current(experiment, meta.model_id, reason="initial model")
        except StorageError as exc:
            raise RegistryError(f"could not point {experiment!r} at its first model") from exc
