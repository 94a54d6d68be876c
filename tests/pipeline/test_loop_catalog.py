"""A running `run_loop` follows the experiment catalog: created experiments start cycling,
archived ones stop, without a restart."""

from __future__ import annotations

import threading

import pytest

from cbloop.experiments import ExperimentCatalog, resolved_settings
from cbloop.settings import Settings
from cbloop.storage import StorageError, open_store
from cbloop_pipeline.loop import CycleReport, run_loop


def test_a_running_loop_picks_up_created_and_archived_experiments(settings: Settings) -> None:
    catalog = ExperimentCatalog(open_store(settings.storage))
    stop = threading.Event()
    cycled: list[str] = []
    archived_at: list[int] = []

    def seen(report: CycleReport) -> None:
        # The changes land while the daemon runs, between its cycles.
        cycled.append(report.experiment)
        if len(cycled) == 1:
            catalog.create("homepage", {"reward": {"wait_seconds": 5}}, by="test", why="new")
        if report.experiment == "homepage" and not archived_at:
            catalog.archive("homepage", by="test", why="ended")
            archived_at.append(len(cycled))
        if archived_at and len(cycled) >= archived_at[0] + 3:
            stop.set()

    run_loop(
        settings,
        None,
        every=0.05,
        once=False,
        stop=stop,
        on_cycle=seen,
        settings_source=lambda: resolved_settings(settings, catalog),
    )
    # Round 1 knew only default; round 2 ran the new one too; later rounds not any more.
    assert cycled[:3] == ["default", "default", "homepage"]
    assert cycled[archived_at[0] :] == ["default"] * 3


def test_named_experiments_no_longer_active_are_skipped(settings: Settings) -> None:
    catalog = ExperimentCatalog(open_store(settings.storage))
    catalog.seed(settings)
    catalog.create("homepage", {}, by="test")
    catalog.archive("homepage", by="test", why="ended")
    cycled: list[str] = []
    run_loop(
        settings,
        ["homepage", "default"],
        every=0.05,
        once=True,
        stop=threading.Event(),
        on_cycle=lambda r: cycled.append(r.experiment),
        settings_source=lambda: resolved_settings(settings, catalog),
    )
    assert cycled == ["default"]


def test_a_catalog_that_cannot_be_read_is_retried_by_the_daemon(settings: Settings) -> None:
    catalog = ExperimentCatalog(open_store(settings.storage))
    calls: list[int] = []
    failures: list[str] = []
    stop = threading.Event()

    def source() -> Settings:
        calls.append(1)
        if len(calls) == 1:
            raise StorageError("store unreachable")
        return resolved_settings(settings, catalog)

    def seen(report: CycleReport) -> None:
        stop.set()

    run_loop(
        settings,
        None,
        every=0.05,
        once=False,
        stop=stop,
        on_cycle=seen,
        on_failure=lambda name, exc, delay: failures.append(f"{name}: {exc}"),
        settings_source=source,
    )
    assert failures == ["(experiments): store unreachable"]
    assert len(calls) == 2


def test_once_a_catalog_that_cannot_be_read_is_an_error(settings: Settings) -> None:
    def source() -> Settings:
        raise StorageError("store unreachable")

    with pytest.raises(StorageError):
        run_loop(
            settings, None, every=0.05, once=True, stop=threading.Event(), settings_source=source
        )
