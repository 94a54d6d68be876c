"""A seeded simulation through the real service and pipeline, its dashboard served for real.

The simulation runs once per session (about a minute): 4 rounds of the synthetic world, with
`--dashboard-snapshot`, so its warehouse, its published snapshot and its static pages are all
there to compare.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_helpers import BROWSER_FLAGS, CHROMIUM, NO_BROWSER, LiveServer, Simulated

from cbloop.settings import load_settings
from cbloop_pipeline.simulate.runner import SimulationOptions, run_simulation


@pytest.fixture(scope="session")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Simulated:
    out = tmp_path_factory.mktemp("dashsim")
    static_dir = out / "dashboard"
    options = SimulationOptions(
        out=out,
        world="synthetic",
        warm_start=100,
        loops=4,
        per_loop=250,
        seed=0,
        dashboard_snapshot=static_dir,
    )
    run_simulation(options)
    config = out / "state" / "config.yaml"
    return Simulated(
        settings=load_settings(config, env={}),
        config=config,
        snapshot=static_dir / "snapshot.duckdb",
        static_dir=static_dir,
        loops=options.loops,
        per_loop=options.per_loop,
        warm_start=options.warm_start,
    )


@pytest.fixture(scope="session")
def dashboard(simulated: Simulated) -> Iterator[LiveServer]:
    with LiveServer(simulated.settings, simulated.snapshot) as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.skip(NO_BROWSER)
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 (optional)
    except ImportError:
        pytest.skip(NO_BROWSER)
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_FLAGS)
        yield instance
        instance.close()
