"""Fixtures of the tuning tests: the cross world, logged and joined, and its finished joins."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tuning_world import EXPERIMENT, World, log_and_join

from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.join_catalog import finished_joins
from cbloop_pipeline.warehouse import connect


def _world(make_settings: Callable[..., Settings], n: int, **experiment: Any) -> World:
    settings = make_settings(experiments={"default": {**EXPERIMENT, **experiment}})
    log_and_join(settings, n, seed=7)
    con = connect(settings.warehouse)
    try:
        joins = finished_joins(con, "default")
    finally:
        con.close()
    return World(settings, open_store(settings.storage), joins)


@pytest.fixture
def cross_world(make_settings: Callable[..., Settings]) -> World:
    """The world with the default-like settings `--interactions :A` (no user x item cross)."""
    return _world(make_settings, 2500)


@pytest.fixture
def crossed_world(make_settings: Callable[..., Settings]) -> World:
    """The same world with settings that have the cross (`-q ui`)."""
    return _world(make_settings, 2500, vw_args="-q ui -b 18")
