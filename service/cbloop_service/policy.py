"""Each worker's policies: one VW workspace per experiment, checked before it may serve.

A model is swapped in by replacing one attribute (`PolicyHolder.model`), which is atomic
under the GIL; a request reads that attribute once and keeps its own reference, so a swap
never changes the model under a request. The replaced workspace is freed (VW `finish`)
by reference counting when its last in-flight request lets go of it, so no thread ever
finishes a workspace another one is using.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pylibvw
import vowpalwabbit

from cbloop.clock import format_ts
from cbloop.encoding import build_vw_context, encode_context, predict_line
from cbloop.errors import InvalidInput
from cbloop.registry import ModelRegistry, RegistryError
from cbloop.sampling import InvalidPmf, normalize_pmf
from cbloop.settings import ExperimentSettings, Settings
from cbloop.storage import StorageError
from cbloop.vw import ModelLoadError, open_workspace
from cbloop_service.errors import UnknownExperiment

logger = logging.getLogger(__name__)

#: model_id of the untrained model a worker serves when no registry model passes the checks.
FALLBACK_MODEL_ID = "fallback-untrained"
_PMF_TOLERANCE = 1e-3
_REFUSALS_KEPT = 10


class ModelRefused(InvalidInput):
    """A model failed a check and must not serve; `reason` says which."""

    def __init__(self, model_id: str, reason: str) -> None:
        super().__init__(f"model {model_id!r} refused: {reason}")
        self.model_id = model_id
        self.reason = reason


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    workspace: vowpalwabbit.Workspace
    vw_args: str
    loaded_at: str
    state: str


@dataclass(frozen=True)
class Refusal:
    model_id: str
    reason: str
    at: str


@dataclass
class PolicyHolder:
    experiment: str
    settings: ExperimentSettings
    model: LoadedModel
    pointer_model_id: str | None = None
    refused: deque[Refusal] = field(default_factory=lambda: deque(maxlen=_REFUSALS_KEPT))


def predict_pmf(workspace: vowpalwabbit.Workspace, line: str) -> list[float]:
    """The pmf VW gives for one DSJSON line, aligned with its `_multi` actions.

    Equal to `workspace.predict(line)` (a test holds it to that) but through the pylibvw
    calls that method makes, skipping the Python `Example` wrapper it builds per action:
    that wrapper was most of the prediction's cost on the request path.
    """
    examples = workspace._parse(line)
    try:
        pylibvw.vw.predict_multi(workspace, examples)
        scores: list[float] = examples[0].get_action_scores()
    finally:
        pylibvw.vw._finish_example_multi_ex(workspace, examples)
    return scores


def _probe_check(workspace: vowpalwabbit.Workspace, model_id: str) -> None:
    """A model must turn a plain two-action example into a probability distribution."""
    c = build_vw_context(
        {"probe": {"x": 1.0, "kind": "check"}},
        [("probe-a", {}), ("probe-b", {"probe": {"y": "z"}})],
    )
    try:
        raw = predict_pmf(workspace, predict_line(encode_context(c)))
    except RuntimeError as exc:
        raise ModelRefused(model_id, f"prediction on a probe example failed: {exc}") from exc
    if not isinstance(raw, list):
        raise ModelRefused(model_id, f"probe prediction is not a pmf: {raw!r}")
    try:
        normalize_pmf(raw, 2)
    except InvalidPmf as exc:
        raise ModelRefused(model_id, f"probe prediction is not a pmf: {exc}") from exc
    if abs(sum(raw) - 1.0) > _PMF_TOLERANCE:
        raise ModelRefused(model_id, f"probe pmf sums to {sum(raw)}, not 1")


class ModelLoader:
    """Fetches, loads and checks registry models; never touches what is serving."""

    def __init__(self, registry: ModelRegistry, scratch: Path) -> None:
        self.registry = registry
        self.scratch = scratch

    def load(self, experiment: str, settings: ExperimentSettings, model_id: str) -> LoadedModel:
        """Raises ModelRefused for a bad model, StorageError when the store is unreachable."""
        expected = settings.vw_arguments()
        try:
            meta = self.registry.metadata(experiment, model_id)
        except RegistryError as exc:
            raise ModelRefused(model_id, str(exc)) from exc
        if meta.vw_args != expected:
            raise ModelRefused(
                model_id,
                f"its vw_args {meta.vw_args!r} differ from the experiment's {expected!r}",
            )
        try:
            path = self.registry.fetch(experiment, model_id, self.scratch)
        except RegistryError as exc:
            raise ModelRefused(model_id, str(exc)) from exc
        try:
            workspace = open_workspace(expected, path)
        except ModelLoadError as exc:
            raise ModelRefused(model_id, str(exc)) from exc
        finally:
            if path.parent == self.scratch:  # a download, not the store's own file
                path.unlink(missing_ok=True)
        _probe_check(workspace, model_id)
        return LoadedModel(model_id, workspace, expected, format_ts(), meta.state)

    def fallback(self, settings: ExperimentSettings) -> LoadedModel:
        args = settings.vw_arguments()
        workspace = open_workspace(args)
        _probe_check(workspace, FALLBACK_MODEL_ID)
        return LoadedModel(FALLBACK_MODEL_ID, workspace, args, format_ts(), "fallback")

    def record_refusal(self, experiment: str, refusal: ModelRefused) -> None:
        """Mark the model refused in the registry; every worker may call this for the same one."""
        try:
            meta = self.registry.metadata(experiment, refusal.model_id)
        except RegistryError:
            logger.warning(
                "refused model has no readable metadata to mark",
                extra={"experiment": experiment, "model_id": refusal.model_id},
            )
            return
        except StorageError:
            logger.exception("could not read metadata to mark a refusal")
            return
        if meta.state == "refused":
            return  # a sibling worker (or an earlier poll) already recorded it
        meta.state = "refused"
        meta.record("refused", reason=refusal.reason, by=f"service-{os.getpid()}")
        try:
            self.registry.update_metadata(meta)
        except StorageError:
            logger.exception("could not record a model refusal")


class PolicySet:
    """The holders of every configured experiment, for one worker."""

    def __init__(self, holders: dict[str, PolicyHolder]) -> None:
        self.holders = holders

    def get(self, experiment: str) -> PolicyHolder:
        try:
            return self.holders[experiment]
        except KeyError:
            raise UnknownExperiment(experiment) from None

    @classmethod
    def open(
        cls,
        settings: Settings,
        registry: ModelRegistry,
        loader: ModelLoader,
        on_refused: Callable[[str, ModelRefused], None],
    ) -> PolicySet:
        holders = {}
        for name, exp in settings.experiments.items():
            pointer = registry.current(name)
            if pointer is None:
                # `cbloop serve` creates these before forking workers; this covers an app
                # started directly (tests, embedding) on an empty registry.
                pointer = registry.ensure_initial_model(name, exp)
            holder = PolicyHolder(
                name,
                exp,
                _startup_model(
                    name,
                    settings=exp,
                    current=pointer.model_id,
                    previous=pointer.previous,
                    loader=loader,
                    on_refused=on_refused,
                ),
            )
            holder.pointer_model_id = pointer.model_id
            holders[name] = holder
            logger.info(
                "serving model",
                extra={"experiment": name, "model_id": holder.model.model_id},
            )
        return cls(holders)


def _startup_model(
    experiment: str,
    *,
    settings: ExperimentSettings,
    current: str,
    previous: str | None,
    loader: ModelLoader,
    on_refused: Callable[[str, ModelRefused], None],
) -> LoadedModel:
    """The pointer's model; if it is refused, the one before it; else an untrained model."""
    for model_id in (current, previous):
        if model_id is None:
            continue
        try:
            return loader.load(experiment, settings, model_id)
        except ModelRefused as exc:
            on_refused(experiment, exc)
    logger.error(
        "no registry model passed the checks; serving an untrained model",
        extra={"experiment": experiment},
    )
    return loader.fallback(settings)


class ModelWatcher:
    """Polls each experiment's pointer and swaps in new models, off the request path."""

    def __init__(
        self,
        policies: PolicySet,
        *,
        registry: ModelRegistry,
        loader: ModelLoader,
        poll_seconds: float,
        on_swap: Callable[[PolicyHolder, LoadedModel], None],
        on_refused: Callable[[str, ModelRefused], None],
    ) -> None:
        self.policies = policies
        self.registry = registry
        self.loader = loader
        self.poll_seconds = poll_seconds
        self.on_swap = on_swap
        self.on_refused = on_refused
        self._seen: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        # Nothing is marked seen here: a deploy landing between the startup load and this
        # point would otherwise go unnoticed. The first poll compares the pointer's model id
        # with the one serving, so an unchanged pointer costs one read, not a reload.
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            for holder in self.policies.holders.values():
                try:
                    self.poll(holder)
                except Exception:  # the top of a thread: log it and survive
                    # Transient (store unreachable, pointer mid-write): the version is not
                    # marked seen, so the next tick retries.
                    logger.exception("model poll failed", extra={"experiment": holder.experiment})

    def poll(self, holder: PolicyHolder) -> None:
        """One check of one experiment's pointer; public so tests can drive it directly."""
        name = holder.experiment
        version = self.registry.pointer_version(name)
        if version is None or version == self._seen.get(name):
            return
        pointer = self.registry.current(name)
        if pointer is None:
            return
        holder.pointer_model_id = pointer.model_id
        if pointer.model_id != holder.model.model_id:
            try:
                loaded = self.loader.load(name, holder.settings, pointer.model_id)
            except ModelRefused as exc:
                self.on_refused(name, exc)
            else:
                old = holder.model
                holder.model = loaded
                self.on_swap(holder, old)
        self._seen[name] = version
