"""Each worker follows the experiment catalog: new experiments start serving, changed ones
take their new settings, archived ones stop, all without a restart.

The model watcher calls `poll` at the start of every round (one listing of the catalog's
version files; records are read only for versions not seen yet) and again before it loads a
model a pointer newly names. A new experiment gets a holder the way startup builds one (its
pointer's model, or a first untrained model when it has none yet). A changed experiment's
holder keeps its model and takes the new settings; when the VW arguments changed, the catalog
has already pointed the experiment at a fresh model, which the watcher then swaps in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pydantic import ValidationError

from cbloop.experiments import ExperimentCatalog, UnreadableRecord
from cbloop.settings import ExperimentSettings, Settings
from cbloop_service.policy import ModelLoader, ModelRefused, PolicyHolder, PolicySet, open_holder

logger = logging.getLogger(__name__)


class CatalogSync:
    def __init__(
        self,
        catalog: ExperimentCatalog,
        policies: PolicySet,
        loader: ModelLoader,
        settings: Settings,
        *,
        on_refused: Callable[[str, ModelRefused], None],
        on_settings: Callable[[Settings], None],
        on_added: Callable[[PolicyHolder], None],
    ) -> None:
        self.catalog = catalog
        self.policies = policies
        self.loader = loader
        self.settings = settings
        self.on_refused = on_refused
        self.on_settings = on_settings
        self.on_added = on_added
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()

    def prime(self, seen: dict[str, int]) -> None:
        """The versions the worker opened with (name -> version), archived ones included."""
        self._seen = dict(seen)
        self.policies.replace(
            self.policies.holders,
            frozenset(n for n in seen if n not in self.settings.experiments),
        )

    def poll(self) -> None:
        """Apply every version not seen yet; raises when the store cannot be read.

        Thread-safe: the watcher calls it, and so does the admin route that just wrote a
        change (so the worker that answered serves it at once).
        """
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        heads = self.catalog.heads()
        changed = {n: v for n, v in heads.items() if self._seen.get(n) != v}
        if not changed:
            return
        holders = dict(self.policies.holders)
        archived = set(self.policies.archived)
        experiments = dict(self.settings.experiments)
        try:
            for name, version in sorted(changed.items()):
                self._apply(name, version, holders, archived, experiments)
                self._seen[name] = version
        finally:
            # What was applied before a failure stays applied; the rest is retried.
            self.policies.replace(holders, frozenset(archived))
            self.settings = self.settings.model_copy(update={"experiments": experiments})
            self.on_settings(self.settings)

    def _apply(
        self,
        name: str,
        version: int,
        holders: dict[str, PolicyHolder],
        archived: set[str],
        experiments: dict[str, ExperimentSettings],
    ) -> None:
        try:
            record = self.catalog.record(name, version)
            experiment = record.experiment()
        except (UnreadableRecord, ValidationError):
            # Retrying cannot mend it: say so once and keep what serves (the version is
            # marked seen; a newer, readable one is applied when it comes).
            logger.exception(
                "unreadable experiment record; keeping the previous settings",
                extra={"experiment": name, "version": version},
            )
            return
        if record.archived:
            holders.pop(name, None)
            experiments.pop(name, None)
            archived.add(name)
            logger.info("experiment archived", extra={"experiment": name, "version": version})
            return
        holder = holders.get(name)
        if holder is None:
            holder = open_holder(
                name, experiment, self.loader.registry, self.loader, self.on_refused
            )
            holders[name] = holder
            self.on_added(holder)
        else:
            # One attribute: a request reads it once, so it sees the old or the new settings.
            holder.settings = experiment
        experiments[name] = experiment
        archived.discard(name)
        logger.info(
            "experiment settings applied",
            extra={"experiment": name, "version": version, "by": record.by},
        )

    def poll_safely(self) -> bool:
        """`poll` for the top of the watcher's thread: a failure is logged and retried."""
        try:
            self.poll()
        except Exception:
            # Whatever failed (store unreachable, a record mid-write), the versions not
            # applied stay unseen and the next round tries them again.
            logger.exception("experiment catalog poll failed; retrying with backoff")
            return False
        return True
