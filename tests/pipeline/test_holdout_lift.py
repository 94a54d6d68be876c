"""The lift of a bandit over a uniform 10% holdout, through HTTP, the real loop and the report.

The true lift is known exactly: each decision's expected reward under the pmf it was drawn
from (the answer's ranking) in a world whose reward probabilities we set, bandit decisions
against holdout decisions. The report's 95% interval must cover it in at least 9 of 10 seeds.
"""

from __future__ import annotations

import logging
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from modes_world import Served, SettingsFactory, change, cycle, serve_round, world_settings
from typer.testing import CliRunner

from cbloop.clock import utcnow_naive
from cbloop.settings import Settings, load_settings
from cbloop.storage import open_store
from cbloop_cli.main import app
from cbloop_pipeline.ingest import ingest
from cbloop_pipeline.join import run_join
from cbloop_pipeline.lift import Group, Lift, combine, holdout_lift, sample_ratio
from cbloop_pipeline.report import experiment_report, render
from cbloop_pipeline.warehouse import connect

SEEDS = range(10)
SHARE = 0.1


@pytest.fixture(scope="module")
def learned_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage root whose deployed bandit learned the world from a warm-up round.

    The warm-up is served without a holdout (share 0: a period the lift leaves out), so every
    seed's lift rests only on its own decisions; each seed copies this root.
    """
    root = tmp_path_factory.mktemp("learned") / "root"
    settings = world_settings(_settings_factory(root.parent), root)
    serve_round(settings, 300, seed=100, tag="warm")
    cycle(settings)  # learns the warm-up round and deploys: the bandit now differs
    return root


def _settings_factory(folder: Path) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        config = folder / f"config-{len(list(folder.glob('config-*.yaml')))}.yaml"
        config.write_text(yaml.safe_dump(overrides))
        return load_settings(config, env={})

    return make


def _measure(learned: Path, root: Path, seed: int) -> tuple[dict[str, Any], float]:
    """(the report's lift section, the true lift) of one seeded run on a copy of `learned`."""
    shutil.copytree(learned, root)
    settings = world_settings(_settings_factory(root.parent), root)
    change(settings, holdout={"share": SHARE, "policy": "uniform"})
    served = serve_round(settings, 500, seed=seed, tag="learned")
    con = connect(settings.warehouse)
    try:
        ingest(con, open_store(settings.storage))
        run_join(con, open_store(settings.storage), "default", settings.experiment("default"))
        lift = holdout_lift(con, "default")
    finally:
        con.close()
    return lift, _true_lift(served)


def _true_lift(served: Served) -> float:
    bandit = [served.expected(i) for i, a in enumerate(served.answers) if not a["holdout"]]
    held = [served.expected(i) for i, a in enumerate(served.answers) if a["holdout"]]
    return sum(bandit) / len(bandit) - sum(held) / len(held)


def test_the_lift_interval_covers_the_true_lift_in_at_least_9_of_10_seeds(
    learned_world: Path, tmp_path: Path
) -> None:
    covered, lifts = 0, []
    for seed in SEEDS:
        lift, truth = _measure(learned_world, tmp_path / f"seed{seed}", seed)
        overall = lift["overall"]["lift"]
        # The warm-up period (no holdout) and this seed's period; only the latter counts.
        assert lift["configured"] and [p["share"] for p in lift["periods"]] == [0.0, SHARE]
        assert lift["overall"]["periods"] == 1
        assert not lift["overall"]["sample_ratio_mismatch"]
        low, high = overall["absolute_low"], overall["absolute_high"]
        covered += low <= truth <= high
        lifts.append((round(truth, 3), round(low, 3), round(high, 3)))
        assert truth > 0.1  # the learned bandit really is better than uniform here
    assert covered >= 9, lifts


def test_the_report_shows_lift_per_day_and_overall_and_flags_a_share_mismatch(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    root = tmp_path / "report"
    settings = world_settings(make_settings, root, holdout={"share": 0.2})
    serve_round(settings, 300, seed=3, tag="one")
    # The share changes mid-experiment: a new period. Units hash the same, so raising the
    # share only adds units to the holdout.
    change(settings, holdout={"share": 0.4})
    serve_round(settings, 300, seed=3, tag="two")
    cycle(settings)
    con = connect(settings.warehouse)
    try:
        report = experiment_report(con, "default", "experiment")
        as_json = orjson.loads(render(report, "json"))
        text = render(report, "table", width=200)
    finally:
        con.close()
    lift = as_json["lift"]
    assert [p["share"] for p in lift["periods"]] == [0.2, 0.4]
    for period in lift["periods"]:
        ratio = period["sample_ratio"]
        assert ratio["units"] == 300 and not ratio["mismatch"]
        assert abs(ratio["observed_share"] - period["share"]) < 0.1
        assert period["lift"]["absolute_low"] < period["lift"]["absolute"]
        assert period["lift"]["absolute"] < period["lift"]["absolute_high"]
        assert period["bandit"]["learned"] + period["holdout"]["learned"] == 300
    assert {d["day"] for d in lift["days"]} == {utcnow_naive().date().isoformat()} or {
        d["day"] for d in lift["days"]
    } == {(utcnow_naive() - timedelta(minutes=5)).date().isoformat()}
    assert lift["overall"]["periods"] == 2
    assert lift["overall"]["lift"]["relative"] is not None
    assert "holdout share 20%" in text and "holdout share 40%" in text
    assert "overall (2 period(s))" in text and "sample ratio" in text
    assert "MISMATCH" not in text
    # The command line gives the same JSON.
    root_logger = logging.getLogger()
    handlers, level = list(root_logger.handlers), root_logger.level
    try:
        result = CliRunner().invoke(
            app,
            [
                "report",
                "--by",
                "experiment",
                "--format",
                "json",
                "--config",
                str(tmp_path / "config.yaml"),
            ],
        )
    finally:
        # The command points the root logger at CliRunner's stream, closed afterwards.
        root_logger.handlers[:] = handlers
        root_logger.setLevel(level)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["lift"] == lift


@pytest.mark.parametrize(
    ("share", "units", "held", "mismatch"),
    [
        (0.1, 10_000, 1_000, False),
        (0.1, 10_000, 1_050, False),  # z = 1.67
        (0.1, 10_000, 1_200, True),  # z = 6.7
        (0.05, 2_000, 60, True),  # 3% against 5%: z = -4.1
    ],
)
def test_the_sample_ratio_check_flags_a_holdout_share_off_its_setting(
    share: float, units: int, held: int, mismatch: bool
) -> None:
    check = sample_ratio(share, units, held)
    assert check["mismatch"] is mismatch
    assert (check["p_value"] < 1e-3) is mismatch


def test_no_holdout_means_no_lift_and_the_report_says_so(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = world_settings(make_settings, tmp_path / "none")
    serve_round(settings, 50, seed=4, tag="only")
    cycle(settings)
    con = connect(settings.warehouse)
    try:
        report = experiment_report(con, "default", "experiment")
    finally:
        con.close()
    assert report.lift["configured"] is False and report.lift["overall"] is None
    assert "no holdout configured" in render(report, "table", width=120)


def test_lift_formulas_match_welch_and_the_delta_method_and_periods_combine_by_weight() -> None:
    # Bandit: 100 events, 60 rewards of 1; holdout: 50 events, 20 rewards of 1.
    bandit, held = Group(100, 100, 100, 60.0, 60.0), Group(50, 50, 50, 20.0, 20.0)
    lift = Lift.of(bandit, held).to_dict()
    vb, vh = 0.6 * 0.4 * 100 / 99 / 100, 0.4 * 0.6 * 50 / 49 / 50
    assert lift["absolute"] == pytest.approx(0.2)
    assert lift["absolute_high"] - lift["absolute"] == pytest.approx(1.96 * (vb + vh) ** 0.5)
    assert lift["relative"] == pytest.approx(0.5)
    rel_var = vb / 0.4**2 + 0.6**2 * vh / 0.4**4
    assert lift["relative_high"] - lift["relative"] == pytest.approx(1.96 * rel_var**0.5)
    # Two periods of 150 and 50 learned events: weights 3/4 and 1/4.
    other = Lift.of(Group(40, 40, 40, 10.0, 10.0), Group(10, 10, 10, 5.0, 5.0))
    combined = combine([(150, Lift.of(bandit, held)), (50, other)])
    assert combined.absolute == pytest.approx(0.75 * 0.2 + 0.25 * (0.25 - 0.5))
    assert combined.absolute_var == pytest.approx(
        0.75**2 * (vb + vh) + 0.25**2 * float(other.absolute_var or 0)
    )
    # No holdout reward yet: no lift, and no interval claimed.
    empty = Lift.of(bandit, Group(3, 3, 0, 0.0, 0.0)).to_dict()
    assert empty["absolute"] is None and empty["absolute_low"] is None
