"""Fixtures of the learning-loop tests: settings for a synthetic world, and a way to log events
and run the real ingest and join over them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from learning_world import LoggedBatch, Policy, uniform, write_events

from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.ingest import ingest
from cbloop_pipeline.join import JoinResult, run_join
from cbloop_pipeline.warehouse import connect

LogAndJoin = Callable[..., tuple[LoggedBatch, JoinResult]]


@pytest.fixture
def lsettings(make_settings: Callable[..., Settings]) -> Settings:
    """Events logged minutes ago are joinable at once; small promotion minimum."""
    return make_settings(
        experiments={
            "default": {
                "vw_args": "--interactions :: -b 18",
                "reward": {"wait_seconds": 60, "backward_seconds": 3600},
                "promotion": {"estimator": "dr", "min_events": 50, "margin": 0.0},
            }
        }
    )


@pytest.fixture
def log_and_join(lsettings: Settings) -> LogAndJoin:
    """Log `n` events of `policy` (seeded) and join everything logged so far."""

    def run(
        n: int, *, seed: int, policy: Policy = uniform, **kw: Any
    ) -> tuple[LoggedBatch, JoinResult]:
        batch = write_events(lsettings.storage.root, n, seed=seed, policy=policy, **kw)
        store = open_store(lsettings.storage)
        con = connect(lsettings.warehouse)
        try:
            ingest(con, store)
            job = run_join(con, store, "default", lsettings.experiment("default"))
        finally:
            con.close()
        return batch, job

    return run
