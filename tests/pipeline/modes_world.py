"""A seeded world served through the real HTTP app (TestClient with its lifespan) and learned
by the real loop, for the mode, graduation and holdout-lift tests.

Five user segments, five actions: action `a<s>` pays with probability HIGH in segment s, every
other action with LOW. Each round starts the app (it loads the registry's current model),
ranks `n` requests, posts the Bernoulli rewards, and stops the app (closing its segments),
so the loop's next cycle sees everything.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from cbloop.experiments import ExperimentCatalog, resolved_settings
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.graduation import CatalogModeSwitch
from cbloop_pipeline.loop import CycleReport, run_cycle
from cbloop_service.app import create_app

SEGMENTS = 5
ACTIONS = tuple(f"a{j}" for j in range(SEGMENTS))
HIGH = 0.8
LOW = 0.2
UNIFORM_VALUE = (HIGH + (len(ACTIONS) - 1) * LOW) / len(ACTIONS)
#: Joinable almost at once: rounds post their rewards within milliseconds of the decision.
WAIT_SECONDS = 0.5

SettingsFactory = Callable[..., Settings]


def mean_reward(segment: int, action: str) -> float:
    return HIGH if action == ACTIONS[segment] else LOW


def experiment_settings(**experiment: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "vw_args": "--interactions :: -b 18",
        "reward": {"wait_seconds": WAIT_SECONDS, "backward_seconds": 3600, "default": 0.0},
        "split": {"train_ratio": 0.5},
        "promotion": {"estimator": "dr", "min_events": 50, "margin": 0.0},
    }
    for key, value in experiment.items():
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
    return base


def world_settings(make_settings: SettingsFactory, root: Path, **experiment: Any) -> Settings:
    return make_settings(
        storage={"root": str(root)},
        warehouse={"path": str(root / "warehouse.duckdb")},
        pipeline={"lock_path": str(root / "pipeline.lock")},
        logging={"level": "WARNING", "format": "text"},
        experiments={"default": experiment_settings(**experiment)},
    )


@dataclass
class Served:
    """What a round served: per decision its segment, answer and expected reward."""

    segments: list[int] = field(default_factory=list)
    answers: list[dict[str, Any]] = field(default_factory=list)

    def expected(self, i: int) -> float:
        """Exact expected reward of decision i under the pmf it was drawn from."""
        return sum(
            r["probability"] * mean_reward(self.segments[i], r["id"])
            for r in self.answers[i]["ranking"]
        )

    def extend(self, other: Served) -> None:
        self.segments += other.segments
        self.answers += other.answers


def request(segment: int, event_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "context": {"user": {"seg": f"s{segment}"}},
        "actions": [{"id": a, "features": {"item": {"kind": a}}} for a in ACTIONS],
        **extra,
    }


def serve_round(
    settings: Settings,
    n: int,
    *,
    seed: int,
    tag: str,
    baseline: Callable[[int], str] | None = None,
    unit: Callable[[int, str], str] | None = None,
) -> Served:
    """Rank `n` requests through the app and post their rewards; the app stops after."""
    rng = random.Random(f"{seed}-{tag}")
    served = Served()
    with TestClient(create_app(settings)) as client:
        for i in range(n):
            segment = rng.randrange(SEGMENTS)
            event_id = f"s{seed}-{tag}-{i}"
            extra: dict[str, Any] = {}
            if baseline is not None:
                extra["baseline_action"] = baseline(segment)
            if unit is not None:
                extra["unit_id"] = unit(i, event_id)
            response = client.post("/v1/rank", json=request(segment, event_id, **extra))
            assert response.status_code == 200, response.text
            answer = response.json()
            served.segments.append(segment)
            served.answers.append(answer)
            if rng.random() < mean_reward(segment, answer["action_id"]):
                posted = client.post(f"/v1/events/{event_id}/reward", json={"value": 1.0})
                assert posted.status_code == 202, posted.text
    time.sleep(WAIT_SECONDS * 1.2)  # every reward window has closed
    return served


def catalog(settings: Settings) -> ExperimentCatalog:
    return ExperimentCatalog(open_store(settings.storage))


def change(settings: Settings, **changes: Any) -> None:
    """Change the experiment as an admin would: a new version in the store's catalog."""
    catalog(settings).update("default", changes, by="test", why="the test changes it")


def cycle(settings: Settings) -> CycleReport:
    """One loop cycle as `cbloop loop` runs it: on the catalog's settings, with its switch."""
    current = resolved_settings(settings, catalog(settings))
    return run_cycle(current, "default", mode_switch=CatalogModeSwitch(catalog(settings)))
