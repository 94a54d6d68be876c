"""The one way the Personalizer routes change an experiment's settings.

Configuration and policy writes become settings changes (dotted keys, see `configuration`);
an `ExperimentWriter` applies them. The service's writer is `CatalogWriter`: a new version
of the experiment in the run-time experiment store (`cbloop.experiments`), which every
worker and the loop follow; the worker that answers applies it before answering. An app
may carry another writer at `app.state.experiment_writer` (tests do).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from cbloop.settings import ExperimentSettings
from cbloop_service.state import ServiceState


class ExperimentWriter(Protocol):
    def apply(self, experiment: str, changes: Mapping[str, Any]) -> ExperimentSettings:
        """Apply dotted-key changes (`reward.wait_seconds`) to an experiment's settings.

        Validates the result as the settings do (raising `InvalidInput` or `ConfigError`
        naming the key), stores it for every worker and returns the new settings.
        """
        ...


def nested(changes: Mapping[str, Any]) -> dict[str, Any]:
    """`{"reward.wait_seconds": 5}` -> `{"reward": {"wait_seconds": 5}}`."""
    out: dict[str, Any] = {}
    for key, value in changes.items():
        node = out
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


class CatalogWriter:
    """Changes as a new experiment version in the store, applied on this worker at once."""

    def __init__(self, service: ServiceState, *, by: str, why: str) -> None:
        self.service = service
        self.by = by
        self.why = why

    def apply(self, experiment: str, changes: Mapping[str, Any]) -> ExperimentSettings:
        record = self.service.catalog.update(experiment, nested(changes), by=self.by, why=self.why)
        # This worker serves the new version before answering; the others follow in a poll.
        self.service.experiments.poll_safely()
        return record.experiment()
