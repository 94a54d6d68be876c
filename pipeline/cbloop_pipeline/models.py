"""Questions about an experiment's models that train, evaluate, deploy and the loop all ask.

The registry (cbloop.registry) stores models; this module decides which of them count: which
are deployable under the experiment's current VW arguments, which one a new model continues
from, which joins a model's lineage has already learned, and which model the pointer makes
"deployed".
"""

from __future__ import annotations

import logging

from cbloop.errors import ConfigError
from cbloop.registry import ModelMetadata, ModelRegistry, ModelState, Pointer, RegistryError
from cbloop.settings import ExperimentSettings

logger = logging.getLogger(__name__)


class ModelChoiceError(ConfigError):
    """The requested model cannot be used for this operation; the message says why."""


def why_not_deployable(meta: ModelMetadata, experiment: ExperimentSettings) -> str | None:
    """The one rule for serving a model (and so for continuing from it): None when it may,
    else why not.

    VW merges mismatched arguments into a loaded model without complaint, so the metadata's
    arguments are the only trustworthy record of what a model file is.
    """
    if meta.state == "refused":
        return f"model {meta.model_id} was refused by the service (its file cannot be loaded)"
    if meta.vw_args != experiment.vw_arguments():
        return (
            f"model {meta.model_id} was trained with VW arguments {meta.vw_args!r} but "
            f"experiment {meta.experiment!r} now uses {experiment.vw_arguments()!r}"
        )
    if meta.file_deleted_at is not None:
        return f"model {meta.model_id}'s file was deleted by retention"
    return None


def is_deployable(meta: ModelMetadata, experiment: ExperimentSettings) -> bool:
    return why_not_deployable(meta, experiment) is None


def lineage(registry: ModelRegistry, meta: ModelMetadata) -> list[ModelMetadata]:
    """`meta` and its ancestors, newest first; stops at a missing or repeated ancestor."""
    chain = [meta]
    seen = {meta.model_id}
    parent = meta.parent_id
    while parent is not None and parent not in seen:
        try:
            ancestor = registry.metadata(meta.experiment, parent)
        except RegistryError:
            logger.warning(
                "ancestor %s of %s is missing; its joins count as unseen", parent, meta.model_id
            )
            break
        chain.append(ancestor)
        seen.add(parent)
        parent = ancestor.parent_id
    return chain


def joins_seen(registry: ModelRegistry, meta: ModelMetadata | None) -> set[str]:
    """Every join whose train split this model or one of its ancestors learned from."""
    if meta is None:
        return set()
    return {join for m in lineage(registry, meta) for join in m.joins}


def latest_trainable(
    registry: ModelRegistry, name: str, experiment: ExperimentSettings
) -> ModelMetadata | None:
    """The newest registered model a new model may continue from (the default parent)."""
    usable = [m for m in registry.list_models(name) if is_deployable(m, experiment)]
    return usable[-1] if usable else None


def deployed_model(registry: ModelRegistry, name: str) -> ModelMetadata | None:
    """The model the service serves: the pointer's, or the one before it if that was refused."""
    pointer = registry.current(name)
    if pointer is None:
        return None
    named = registry.metadata(name, pointer.model_id)
    if named.state != "refused" or pointer.previous is None:
        return named
    return registry.metadata(name, pointer.previous)


def last_event_at(meta: ModelMetadata, what: str) -> str:
    """When the model's history last recorded `what` ("" if never); ISO strings sort by time."""
    times = [h.get("at", "") for h in meta.history if h.get("what") == what]
    return max(times, default="")


def reconcile_states(registry: ModelRegistry, name: str) -> list[ModelMetadata]:
    """Make metadata states agree with the pointer, which is the authority.

    Deploy moves the pointer first and updates states after; a process killed in between
    leaves two "deployed" models or none, and this repairs it. Refused models stay refused:
    that is the service's verdict on the file, and while the pointer names a refused model
    the service keeps serving the one before it, which therefore stays "deployed".
    """
    pointer = registry.current(name)
    models = registry.list_models(name)
    live = _live_model(pointer, {m.model_id: m for m in models})
    changed: list[ModelMetadata] = []
    for meta in models:
        want = _wanted_state(meta, live)
        if want is not None and want != meta.state:
            logger.info("model %s state %s -> %s (live: %s)", meta.model_id, meta.state, want, live)
            meta.state = want
            meta.record("state reconciled", state=want, live=live)
            registry.update_metadata(meta)
            changed.append(meta)
    return changed


def _live_model(pointer: Pointer | None, models: dict[str, ModelMetadata]) -> str | None:
    if pointer is None:
        return None
    named = models.get(pointer.model_id)
    if named is not None and named.state == "refused":
        return pointer.previous
    return pointer.model_id


def _wanted_state(meta: ModelMetadata, live: str | None) -> ModelState | None:
    if meta.state == "refused":
        return None
    if meta.model_id == live:
        return "deployed"
    if meta.state == "deployed":
        return "retired"
    return None


def events_total(meta: ModelMetadata | None) -> int:
    """Events learned by the model and all its ancestors."""
    if meta is None:
        return 0
    extra = meta.model_extra or {}
    total = extra.get("events_total")
    return int(total) if isinstance(total, int | float) else meta.events_trained
