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
from typing import Protocol

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
from cbloop_service.errors import ArchivedExperiment, UnknownExperiment

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
    #: Why the last poll of the pointer failed (None once a poll succeeds again).
    watch_error: str | None = None
    watch_error_at: str | None = None
    _refused: deque[Refusal] = field(default_factory=lambda: deque(maxlen=_REFUSALS_KEPT))
    # The watcher thread appends while the model route reads: iterating a deque another
    # thread mutates raises, so both go through this lock.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_refusal(self, refusal: Refusal) -> None:
        with self._lock:
            self._refused.append(refusal)

    def refusals(self) -> list[Refusal]:
        """A copy of the refusals kept, oldest first."""
        with self._lock:
            return list(self._refused)

    @property
    def behind_pointer(self) -> bool:
        """The served model may not be what the registry's pointer names.

        True while polls fail (the pointer cannot be read, so a deploy may go unseen), or
        when the pointer names a model that is neither serving nor refused.
        """
        if self.watch_error is not None:
            return True
        pointer = self.pointer_model_id
        if pointer is None or pointer == self.model.model_id:
            return False
        return all(r.model_id != pointer for r in self.refusals())


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
    """The holders of every active experiment, for one worker.

    `holders` is replaced whole, never changed in place (`replace`): a reader iterating it on
    another thread keeps a consistent dict while the watcher adds or drops an experiment.
    """

    def __init__(self, holders: dict[str, PolicyHolder]) -> None:
        self.holders = holders
        self.archived: frozenset[str] = frozenset()

    def replace(self, holders: dict[str, PolicyHolder], archived: frozenset[str]) -> None:
        self.archived = archived
        self.holders = holders

    def close(self) -> None:
        """Free every serving workspace (at shutdown, once no request can reach them)."""
        for holder in self.holders.values():
            holder.model.workspace.finish()

    def get(self, experiment: str) -> PolicyHolder:
        try:
            return self.holders[experiment]
        except KeyError:
            if experiment in self.archived:
                raise ArchivedExperiment(experiment) from None
            raise UnknownExperiment(experiment) from None

    @classmethod
    def open(
        cls,
        settings: Settings,
        registry: ModelRegistry,
        loader: ModelLoader,
        on_refused: Callable[[str, ModelRefused], None],
    ) -> PolicySet:
        holders: dict[str, PolicyHolder] = {}
        try:
            cls._load_all(settings, registry, loader, on_refused, holders)
        except BaseException:
            # A later experiment failed: free the workspaces already loaded, or they would
            # outlive a startup that never completes.
            cls(holders).close()
            raise
        return cls(holders)

    @staticmethod
    def _load_all(
        settings: Settings,
        registry: ModelRegistry,
        loader: ModelLoader,
        on_refused: Callable[[str, ModelRefused], None],
        holders: dict[str, PolicyHolder],
    ) -> None:
        for name, exp in settings.experiments.items():
            holders[name] = open_holder(name, exp, registry, loader, on_refused)


def open_holder(
    name: str,
    exp: ExperimentSettings,
    registry: ModelRegistry,
    loader: ModelLoader,
    on_refused: Callable[[str, ModelRefused], None],
) -> PolicyHolder:
    """A holder for one experiment, serving its pointer's model (created if it has none)."""
    pointer = registry.current(name)
    if pointer is None:
        # `cbloop serve` and the catalog create these before workers look; this covers an
        # app started directly (tests, embedding) on an empty registry.
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
    logger.info("serving model", extra={"experiment": name, "model_id": holder.model.model_id})
    return holder


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


class CatalogPoll(Protocol):
    """What the watcher needs of the experiment catalog's follower (`catalog_sync`)."""

    def poll(self) -> None: ...

    def poll_safely(self) -> bool: ...


#: Longest wait between polls while they keep failing (or poll_seconds, if longer).
MAX_BACKOFF_SECONDS = 30.0
_BACKOFF_DOUBLINGS = 5


def backoff_seconds(poll_seconds: float, failed_rounds: int) -> float:
    """Wait before the next poll after `failed_rounds` failing rounds in a row (0: none)."""
    if failed_rounds <= 0:
        return poll_seconds
    grown = poll_seconds * float(2 ** min(failed_rounds, _BACKOFF_DOUBLINGS))
    return min(grown, max(poll_seconds, MAX_BACKOFF_SECONDS))


class ModelWatcher:
    """Polls each experiment's pointer and swaps in new models, off the request path.

    The thread survives any failure of a poll: it logs it, counts it (`on_error`), marks
    the experiment as possibly behind its pointer and retries with a growing delay, so a
    short fault (a permission error, the store unreachable) cannot freeze a worker's model.
    """

    def __init__(
        self,
        policies: PolicySet,
        *,
        registry: ModelRegistry,
        loader: ModelLoader,
        poll_seconds: float,
        on_swap: Callable[[PolicyHolder, LoadedModel], None],
        on_refused: Callable[[str, ModelRefused], None],
        on_error: Callable[[PolicyHolder, BaseException], None] | None = None,
        on_poll: Callable[[PolicyHolder], None] | None = None,
        catalog: CatalogPoll | None = None,
    ) -> None:
        self.policies = policies
        self.catalog = catalog
        self.registry = registry
        self.loader = loader
        self.poll_seconds = poll_seconds
        self.on_swap = on_swap
        self.on_refused = on_refused
        self.on_error = on_error
        self.on_poll = on_poll
        self._seen: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed_rounds = 0

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
        while not self._stop.wait(backoff_seconds(self.poll_seconds, self._failed_rounds)):
            failed = False
            if self.catalog is not None:
                failed |= not self.catalog.poll_safely()
            for holder in self.policies.holders.values():
                failed |= not self._poll_safely(holder)
            self._failed_rounds = self._failed_rounds + 1 if failed else 0

    def _poll_safely(self, holder: PolicyHolder) -> bool:
        try:
            self.poll(holder)
        except Exception as exc:
            # The top of a long-lived thread: whatever went wrong (store unreachable, a raw
            # PermissionError, a pointer mid-write), the version is not marked seen, so a
            # later round retries; the worker keeps serving the model it has.
            holder.watch_error = f"{type(exc).__name__}: {exc}"
            holder.watch_error_at = format_ts()
            logger.exception(
                "model poll failed; retrying with backoff",
                extra={
                    "experiment": holder.experiment,
                    "error": holder.watch_error,
                    "failed_rounds": self._failed_rounds + 1,
                    "serving": holder.model.model_id,
                },
            )
            if self.on_error is not None:
                self.on_error(holder, exc)
            return False
        if holder.watch_error is not None:
            logger.info("model poll works again", extra={"experiment": holder.experiment})
            holder.watch_error = holder.watch_error_at = None
        if self.on_poll is not None:
            self.on_poll(holder)
        return True

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
            if self.catalog is not None:
                # A change of VW arguments writes the experiment before it moves the
                # pointer: reading the catalog after the pointer sees the new arguments.
                self.catalog.poll()
            try:
                loaded = self.loader.load(name, holder.settings, pointer.model_id)
            except ModelRefused as exc:
                self.on_refused(name, exc)
            else:
                old = holder.model
                holder.model = loaded
                self.on_swap(holder, old)
        self._seen[name] = version
