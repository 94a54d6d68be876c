"""logging_only through HTTP and the real loop: whatever the loop learns and serves, users
get exactly the app's own choice, and every decision is logged with its true propensity."""

from __future__ import annotations

from pathlib import Path

from modes_world import ACTIONS, SettingsFactory, cycle, serve_round, world_settings

from cbloop.registry import ModelRegistry
from cbloop.storage import open_store
from cbloop_pipeline.deploy import deploy
from cbloop_pipeline.warehouse import connect


def _app_choice(segment: int) -> str:
    return ACTIONS[(segment + 2) % len(ACTIONS)]


def test_logging_only_serves_the_app_choice_before_and_after_a_newly_trained_model_serves(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = world_settings(
        make_settings, tmp_path / "lo", mode="logging_only", holdout={"share": 0.3}
    )
    registry = ModelRegistry(open_store(settings.storage))
    first = serve_round(settings, 200, seed=5, tag="before", baseline=_app_choice)
    before = registry.current("default")
    report = cycle(settings)
    assert all(s.step != "graduate" for s in report.steps)
    # Logged with no exploration, the data cannot show any other policy better than the app's
    # own (promotion compares with the deployed model's on-policy value), so the loop trains
    # but does not promote; an operator forcing the new model in must still change nothing.
    deploy(registry, "default", settings.experiment("default"), force=True)
    after_pointer = registry.current("default")
    assert before is not None and after_pointer is not None
    assert after_pointer.model_id != before.model_id  # the loop did learn; it now serves
    second = serve_round(settings, 200, seed=5, tag="after", baseline=_app_choice)
    assert {a["model_id"] for a in second.answers} == {after_pointer.model_id}
    for served in (first, second):
        for segment, answer in zip(served.segments, served.answers, strict=True):
            assert answer["action_id"] == _app_choice(segment)
            assert answer["probability"] == 1.0
            assert (answer["mode"], answer["holdout"]) == ("logging_only", False)
    cycle(settings)
    con = connect(settings.warehouse)
    try:
        assert con.execute(
            "SELECT mode, holdout, min(p_chosen), count(*) FROM decisions GROUP BY ALL"
        ).fetchall() == [("logging_only", False, 1.0, 400)]
    finally:
        con.close()
