"""The one way the Personalizer routes change an experiment's settings.

Configuration and policy writes become settings changes (see `configuration`); applying
them, so that every worker and the loop see them, is the run-time experiment store's job.
The routes call whatever `ExperimentWriter` the app was given at `app.state.experiment_writer`
and answer 501 while there is none.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from cbloop.settings import ExperimentSettings


class ExperimentWriter(Protocol):
    def apply(self, experiment: str, changes: Mapping[str, Any]) -> ExperimentSettings:
        """Apply dotted-key changes (`reward.wait_seconds`) to an experiment's settings.

        Validates the result as the settings do (raising `InvalidInput` or `ConfigError`
        naming the key), stores it for every worker and returns the new settings.
        """
        ...
