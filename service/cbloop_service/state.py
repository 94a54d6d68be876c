"""The resources one worker holds while it serves, opened and closed by the app's lifespan."""

from __future__ import annotations

import logging
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from cbloop.clock import epoch_seconds, format_ts
from cbloop.eventlog import EventLog
from cbloop.eventlog.shipper import SegmentShipper, make_shipper
from cbloop.experiments import ExperimentCatalog
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_service.auth import Authenticator
from cbloop_service.catalog_sync import CatalogSync
from cbloop_service.metrics import ServiceMetrics
from cbloop_service.policy import (
    LoadedModel,
    ModelLoader,
    ModelRefused,
    ModelWatcher,
    PolicyHolder,
    PolicySet,
    Refusal,
)

logger = logging.getLogger(__name__)


@dataclass
class ServiceState:
    settings: Settings
    registry: ModelRegistry
    policies: PolicySet
    event_log: EventLog
    metrics: ServiceMetrics
    watcher: ModelWatcher
    shipper: SegmentShipper | None
    auth: Authenticator
    catalog: ExperimentCatalog
    #: Follows the catalog; also applies a change the admin routes just wrote.
    experiments: CatalogSync
    #: Undoes everything `open_service` set up, in reverse order.
    resources: ExitStack

    def close(self) -> None:
        self.resources.close()
        logger.info("service resources closed")


def open_service(settings: Settings, metrics: ServiceMetrics) -> ServiceState:
    """Open a worker's resources; if any step fails, everything opened before it is closed.

    Each resource is pushed on one ExitStack as soon as it exists, so shutdown is the same
    stack unwinding (watcher first, scratch folder last) and a failure halfway through
    startup leaks no VW workspace, thread or scratch folder.
    """
    with ExitStack() as stack:
        state = _open(settings, metrics, stack)
        state.resources = stack.pop_all()
        return state


def _open(settings: Settings, metrics: ServiceMetrics, stack: ExitStack) -> ServiceState:
    stack.callback(metrics.close)  # last: the worker's gauges leave the shared files
    registry = ModelRegistry(open_store(settings.storage))
    # The experiments served are the catalog's (config.yaml only seeds it), read once here;
    # the watcher applies later versions.
    catalog = ExperimentCatalog(registry.store)
    catalog.seed(settings)
    records = catalog.list(include_archived=True)
    settings = settings.model_copy(
        update={"experiments": {r.name: r.experiment() for r in records if not r.archived}}
    )
    scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="cbloop-models-"))
    loader = ModelLoader(registry, Path(scratch))
    # Refusals seen while the holders are being built (at startup) wait here for them.
    refusals: dict[str, list[Refusal]] = {}
    holders: dict[str, PolicyHolder] = {}

    def on_refused(experiment: str, exc: ModelRefused) -> None:
        logger.error(
            "model refused; the previous model keeps serving",
            extra={"experiment": experiment, "model_id": exc.model_id, "reason": exc.reason},
        )
        metrics.refusals.labels(experiment).inc()
        loader.record_refusal(experiment, exc)
        refusal = Refusal(exc.model_id, exc.reason, format_ts())
        holder = holders.get(experiment)
        if holder is not None:
            holder.add_refusal(refusal)
        else:
            refusals.setdefault(experiment, []).append(refusal)

    def on_swap(holder: PolicyHolder, old: LoadedModel) -> None:
        new = holder.model
        logger.info(
            "model swapped in",
            extra={
                "experiment": holder.experiment,
                "model_id": new.model_id,
                "previous": old.model_id,
            },
        )
        metrics.swaps.labels(holder.experiment).inc()
        metrics.set_model(
            holder.experiment, new.model_id, epoch_seconds(new.loaded_at), old.model_id
        )
        metrics.set_behind(holder.experiment, holder.behind_pointer)

    def on_watch_error(holder: PolicyHolder, exc: BaseException) -> None:
        metrics.watch_errors.labels(holder.experiment).inc()
        metrics.set_behind(holder.experiment, True)

    shipper = make_shipper(settings)
    if shipper is not None:
        shipper.start()
        stack.callback(shipper.close)  # runs after the log closed: a last upload chance
    event_log = EventLog(
        settings.storage.root,
        settings.eventlog,
        on_closed=shipper.submit if shipper is not None else None,
    )
    # Unwound after the log closed, so the metrics count the segments closed at shutdown.
    stack.callback(metrics.watch_event_log, None)
    event_log.start()
    # Closing the log renames the open segments (which the shipper then uploads).
    stack.callback(event_log.close)
    metrics.watch_event_log(event_log, shipper)

    policies = PolicySet.open(settings, registry, loader, on_refused)
    stack.callback(policies.close)
    holders.update(policies.holders)
    for holder in policies.holders.values():
        for refusal in refusals.get(holder.experiment, []):
            holder.add_refusal(refusal)
        metrics.set_model(
            holder.experiment, holder.model.model_id, epoch_seconds(holder.model.loaded_at)
        )
        metrics.set_behind(holder.experiment, holder.behind_pointer)

    def on_added(holder: PolicyHolder) -> None:
        for refusal in refusals.pop(holder.experiment, []):
            holder.add_refusal(refusal)
        holders[holder.experiment] = holder
        metrics.set_model(
            holder.experiment, holder.model.model_id, epoch_seconds(holder.model.loaded_at)
        )
        metrics.set_behind(holder.experiment, holder.behind_pointer)

    def on_settings(new: Settings) -> None:
        state.settings = new  # one attribute: a request reads the old or the new settings

    sync = CatalogSync(
        catalog,
        policies,
        loader,
        settings,
        on_refused=on_refused,
        on_settings=on_settings,
        on_added=on_added,
    )
    sync.prime({r.name: r.version for r in records})
    watcher = ModelWatcher(
        policies,
        registry=registry,
        loader=loader,
        poll_seconds=settings.service.model_poll_seconds,
        on_swap=on_swap,
        on_refused=on_refused,
        on_error=on_watch_error,
        on_poll=lambda holder: metrics.set_behind(holder.experiment, holder.behind_pointer),
        catalog=sync,
    )
    state = ServiceState(
        settings=settings,
        registry=registry,
        policies=policies,
        event_log=event_log,
        metrics=metrics,
        watcher=watcher,
        shipper=shipper,
        auth=Authenticator(settings.service),
        catalog=catalog,
        experiments=sync,
        resources=stack,
    )
    watcher.start()
    stack.callback(watcher.stop)
    return state
