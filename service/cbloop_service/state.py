"""The resources one worker holds while it serves, opened and closed by the app's lifespan."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cbloop.clock import epoch_seconds, format_ts
from cbloop.eventlog import EventLog
from cbloop.eventlog.shipper import SegmentShipper, make_shipper
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_service.auth import Authenticator
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
    scratch: tempfile.TemporaryDirectory[str]

    def close(self) -> None:
        self.watcher.stop()
        # Closing the log renames the open segments; the shipper then gets a last chance
        # to upload them before this worker exits.
        self.event_log.close()
        if self.shipper is not None:
            self.shipper.close()
        self.metrics.watch_event_log(None)
        self.scratch.cleanup()
        logger.info("service resources closed")


def open_service(settings: Settings, metrics: ServiceMetrics) -> ServiceState:
    registry = ModelRegistry(open_store(settings.storage))
    scratch = tempfile.TemporaryDirectory(prefix="cbloop-models-")
    loader = ModelLoader(registry, Path(scratch.name))
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
            holder.refused.append(refusal)
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

    try:
        policies = PolicySet.open(settings, registry, loader, on_refused)
    except BaseException:
        scratch.cleanup()
        raise
    holders.update(policies.holders)
    for holder in policies.holders.values():
        holder.refused.extend(refusals.get(holder.experiment, []))
        metrics.set_model(
            holder.experiment, holder.model.model_id, epoch_seconds(holder.model.loaded_at)
        )

    shipper = make_shipper(settings)
    event_log = EventLog(
        settings.storage.root,
        settings.eventlog,
        on_closed=shipper.submit if shipper is not None else None,
    )
    if shipper is not None:
        shipper.start()
    event_log.start()
    metrics.watch_event_log(event_log, shipper)
    watcher = ModelWatcher(
        policies,
        registry=registry,
        loader=loader,
        poll_seconds=settings.service.model_poll_seconds,
        on_swap=on_swap,
        on_refused=on_refused,
    )
    watcher.start()
    return ServiceState(
        settings=settings,
        registry=registry,
        policies=policies,
        event_log=event_log,
        metrics=metrics,
        watcher=watcher,
        shipper=shipper,
        auth=Authenticator(settings.service),
        scratch=scratch,
    )
