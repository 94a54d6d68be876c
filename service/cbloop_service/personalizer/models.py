"""Model export, import and reset for an experiment, as Personalizer's /model routes offer them.

Export is the file the registry's current pointer names. Import puts a VW model file in
the registry and checks it exactly as a worker checks any model before serving it
(`ModelLoader.load`: the experiment's VW arguments, VW loads it, a valid pmf on a probe),
after a check workers cannot make: the arguments stored *in the file* must be the
experiment's. VW merges the command line with the options a model file carries, so a
model trained with other options (say Personalizer's `--epsilon 0.2 -q ::`) would load
under cbloop's arguments and silently serve weights it cannot use. Only a model that passes
both becomes the current model; one that fails is marked refused and nothing changes.
Reset makes a fresh untrained model (the experiment's arguments) the current one.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

import vowpalwabbit

from cbloop.clock import format_ts
from cbloop.errors import InvalidInput
from cbloop.registry import MODEL_FILE, ModelMetadata, ModelRegistry, RegistryError
from cbloop.settings import ExperimentSettings
from cbloop_service.policy import ModelLoader, ModelRefused

#: Options VW reports that say how it was started, not what the model is.
_RUN_OPTIONS = frozenset(
    {
        "--initial_regressor",
        "-i",
        "--quiet",
        "--no_stdin",
        "--dsjson",
        "--json",
        "--predict_only_model",
    }
)


class IncompatibleModel(InvalidInput):
    """A model file that cannot serve the experiment; the message says why."""


@dataclass(frozen=True)
class ExportedModel:
    model_id: str
    data: bytes
    created_at: str


def model_options(path: Path) -> dict[str, str]:
    """The options a VW model file carries (flag -> value, '' for a switch), as VW reads them."""
    try:
        workspace = vowpalwabbit.Workspace(arg_list=["--quiet", "-i", str(path)])
    except RuntimeError as exc:
        raise IncompatibleModel(f"not a VW model file VW can load: {exc}") from exc
    try:
        text = workspace.get_arguments()
    finally:
        workspace.finish()
    options: dict[str, str] = {}
    tokens = shlex.split(" ".join(text)) if isinstance(text, list) else shlex.split(text)
    i = 0
    while i < len(tokens):
        flag = tokens[i]
        value = ""
        if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = tokens[i + 1]
            i += 1
        if flag not in _RUN_OPTIONS:
            # Repeated flags (several --interactions) keep every value, in order.
            options[flag] = f"{options[flag]} {value}".strip() if flag in options else value
        i += 1
    return options


def expected_options(settings: ExperimentSettings) -> dict[str, str]:
    """The options a model made with the experiment's arguments carries."""
    workspace = vowpalwabbit.Workspace(arg_list=[*shlex.split(settings.vw_arguments()), "--quiet"])
    with tempfile.TemporaryDirectory(prefix="cbloop-expected-") as tmp:
        path = Path(tmp) / MODEL_FILE
        workspace.save(str(path))
        workspace.finish()
        return model_options(path)


def check_compatible(path: Path, settings: ExperimentSettings) -> None:
    """Refuse a model file whose stored options differ from the experiment's."""
    found, wanted = model_options(path), expected_options(settings)
    if found == wanted:
        return
    differences = []
    for flag in sorted(set(found) | set(wanted)):
        if found.get(flag) != wanted.get(flag):
            have = _show(flag, found.get(flag))
            want = _show(flag, wanted.get(flag))
            differences.append(f"model has {have}, experiment has {want}")
    raise IncompatibleModel(
        "the model was trained with other VW options than the experiment's "
        f"({settings.vw_arguments()!r}): "
        + "; ".join(differences)
        + ". Set the experiment's vw_args and exploration to the model's options to use it",
    )


def _show(flag: str, value: str | None) -> str:
    if value is None:
        return f"no {flag}"
    return f"{flag} {value}".strip()


def export_current(registry: ModelRegistry, experiment: str, scratch: Path) -> ExportedModel:
    pointer = registry.current(experiment)
    if pointer is None:
        raise RegistryError(f"experiment {experiment!r} has no current model")
    meta = registry.metadata(experiment, pointer.model_id)
    path = registry.fetch(experiment, pointer.model_id, scratch)
    try:
        data = path.read_bytes()
    finally:
        if path.parent == scratch:
            path.unlink(missing_ok=True)
    return ExportedModel(pointer.model_id, data, meta.created_at)


def import_model(
    loader: ModelLoader,
    experiment: str,
    settings: ExperimentSettings,
    model_file: Path,
    *,
    note: str,
) -> ModelMetadata:
    """Register `model_file`, check it as a worker would and make it the current model.

    Raises IncompatibleModel (nothing registered) or ModelRefused (registered, marked
    refused, the pointer untouched).
    """
    check_compatible(model_file, settings)
    registry = loader.registry
    meta = ModelMetadata(
        model_id=registry.new_model_id(),
        experiment=experiment,
        vw_args=settings.vw_arguments(),
        created_at=format_ts(),
    )
    meta.record("imported", note=note)
    registry.save(model_file, meta)
    try:
        loaded = loader.load(experiment, settings, meta.model_id)
    except ModelRefused as exc:
        loader.record_refusal(experiment, exc)
        raise
    loaded.workspace.finish()
    meta = registry.metadata(experiment, meta.model_id)
    meta.state = "deployed"
    registry.update_metadata(meta)
    registry.set_current(experiment, meta.model_id, reason=note)
    return meta


def reset_model(
    registry: ModelRegistry, experiment: str, settings: ExperimentSettings, *, note: str
) -> ModelMetadata:
    """A fresh untrained model becomes the experiment's current model."""
    meta = registry.create_fresh(experiment, settings, note=note)
    meta.state = "deployed"
    registry.update_metadata(meta)
    registry.set_current(experiment, meta.model_id, reason=note)
    return meta
