"""Fixtures for the warehouse/join tests: a pipeline on a temp storage root and warehouse."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from crafted_segments import EventLogFolder, Pipeline, PipelineFactory

from cbloop.settings import Settings


def _reward_settings(**reward: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"wait_seconds": 600, "backward_seconds": 60}
    base.update(reward)
    return base


@pytest.fixture
def make_pipeline(make_settings: Callable[..., Settings]) -> PipelineFactory:
    """make_pipeline(default=None, aggregation="sum", train_ratio=0.5, experiments={...})."""

    def factory(
        *, train_ratio: float = 0.8, experiments: dict[str, Any] | None = None, **reward: Any
    ) -> Pipeline:
        exps = experiments or {
            "default": {
                "reward": _reward_settings(**reward),
                "split": {"train_ratio": train_ratio},
            }
        }
        return Pipeline(make_settings(experiments=exps))

    return factory


@pytest.fixture
def wh(make_pipeline: PipelineFactory) -> Pipeline:
    """Default rules: wait 600 s, backward 60 s, default 0.0, earliest, train ratio 0.8."""
    return make_pipeline()


@pytest.fixture
def event_log(wh: Pipeline) -> EventLogFolder:
    return EventLogFolder(wh.settings.storage.root)
