"""Experiment reports: the views per hour, model and experiment, and `cbloop report`."""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from crafted_segments import EventLogFolder, Pipeline, at, decision, reward
from typer.testing import CliRunner

from cbloop_cli.main import app
from cbloop_pipeline.report import experiment_report

HOUR_12 = datetime(2026, 11, 22, 12)
HOUR_13 = datetime(2026, 11, 22, 13)


@pytest.fixture
def reported(wh: Pipeline, event_log: EventLogFolder) -> Pipeline:
    """Model m-1 in hour 12: e1 rewarded 1.0, e2 rewarded 0.0 (an exploratory pick: p 0.1
    while another action had 0.3), e3 defaulted to 0.0. Model m-2 in hour 13: e4 rewarded 1.0
    plus one late reward, e5 still inside its window."""
    event_log.decisions(
        decision("e1", 0),
        decision("e2", 60, chosen=1, n_actions=4, p_chosen=0.1),
        decision("e3", 120),
        decision("e4", 3600, model_id="m-2", n_actions=2, p_chosen=0.5),
        decision("e5", 4000, model_id="m-2"),
    )
    event_log.outcomes(reward("e1", 10, 1.0), reward("e2", 70, 0.0), reward("e4", 3610, 1.0))
    wh.ingest()
    wh.join(as_of=at(4300))
    event_log.outcomes(reward("e4", 3650, 1.0))  # its segment closed after e4 was joined
    wh.ingest()
    wh.join(as_of=at(4400))
    return wh


def _rows(wh: Pipeline, by: str) -> list[dict[str, object]]:
    con = wh.connect()
    try:
        return experiment_report(con, "default", by).records()  # type: ignore[arg-type]
    finally:
        con.close()


def test_hourly_figures_per_model(reported: Pipeline) -> None:
    m1, m2 = _rows(reported, "hour")

    assert (m1["model_id"], m1["hour"], m2["model_id"], m2["hour"]) == (
        "m-1",
        HOUR_12,
        "m-2",
        HOUR_13,
    )
    # m-1: rewards learned [1, 0, 0] -> mean 1/3, sample variance 1/3, so the 95% half-width
    # is 1.96 * sqrt(1/3 / 3) = 1.96 / 3.
    assert (m1["decisions"], m1["closed"], m1["rewarded"], m1["learned"]) == (3, 3, 2, 3)
    assert m1["share_rewarded"] == pytest.approx(2 / 3)
    assert m1["mean_reward"] == pytest.approx(1 / 3)
    assert m1["mean_reward_low"] == pytest.approx(1 / 3 - 1.96 / 3)
    assert m1["mean_reward_high"] == pytest.approx(1 / 3 + 1.96 / 3)
    assert m1["share_explored"] == pytest.approx(1 / 3)
    assert m1["mean_probability"] == pytest.approx((0.8 + 0.1 + 0.8) / 3)
    assert m1["late_rewards"] == 0
    # m-2: e5's window is still open; one learned reward gives no interval.
    assert (m2["decisions"], m2["closed"], m2["rewarded"], m2["learned"]) == (2, 1, 1, 1)
    assert (m2["share_rewarded"], m2["mean_reward"]) == (1.0, 1.0)
    assert m2["mean_reward_low"] is None and m2["mean_reward_high"] is None
    assert m2["share_explored"] == 0.0
    assert m2["mean_probability"] == pytest.approx((0.5 + 0.8) / 2)
    assert m2["late_rewards"] == 1


def test_figures_per_experiment_roll_up_the_hours_exactly(reported: Pipeline) -> None:
    [row] = _rows(reported, "experiment")

    # Learned rewards [1, 0, 0, 1]: mean 0.5, sample variance 1/3.
    half = 1.96 * math.sqrt((1 / 3) / 4)
    assert (row["models"], row["decisions"], row["closed"], row["rewarded"]) == (2, 5, 4, 3)
    assert row["share_rewarded"] == pytest.approx(0.75)
    assert row["mean_reward"] == pytest.approx(0.5)
    assert row["mean_reward_low"] == pytest.approx(0.5 - half)
    assert row["mean_reward_high"] == pytest.approx(0.5 + half)
    assert row["share_explored"] == pytest.approx(0.2)
    assert row["mean_probability"] == pytest.approx((0.8 + 0.1 + 0.8 + 0.5 + 0.8) / 5)
    assert row["late_rewards"] == 1
    assert (row["first_hour"], row["last_hour"]) == (HOUR_12, HOUR_13)


def test_figures_per_model(reported: Pipeline) -> None:
    m1, m2 = _rows(reported, "model")

    assert (m1["model_id"], m1["decisions"], m1["rewarded"]) == ("m-1", 3, 2)
    assert (m2["model_id"], m2["decisions"], m2["late_rewards"]) == ("m-2", 2, 1)


def test_report_command_prints_json_csv_and_a_table(reported: Pipeline, tmp_path: Path) -> None:
    runner = CliRunner()
    config = str(tmp_path / "config.yaml")

    as_json = runner.invoke(
        app, ["report", "--experiment", "default", "--format", "json", "--config", config]
    )
    as_csv = runner.invoke(
        app, ["report", "-e", "default", "--format", "csv", "--by", "model", "--config", config]
    )
    as_table = runner.invoke(app, ["report", "--config", config])
    wrong = runner.invoke(app, ["report", "--format", "xml", "--config", config])

    assert as_json.exit_code == 0, as_json.output
    records = orjson.loads(as_json.stdout)["rows"]
    assert [(r["model_id"], r["hour"], r["decisions"]) for r in records] == [
        ("m-1", "2026-11-22T12:00:00Z", 3),
        ("m-2", "2026-11-22T13:00:00Z", 2),
    ]
    parsed = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [(r["model_id"], r["decisions"], r["late_rewards"]) for r in parsed] == [
        ("m-1", "3", "0"),
        ("m-2", "2", "1"),
    ]
    assert as_table.exit_code == 0 and "m-1" in as_table.stdout and "rewarded%" in as_table.stdout
    assert wrong.exit_code == 2 and "--format" in wrong.output


def test_an_experiment_without_data_reports_no_rows(wh: Pipeline) -> None:
    assert _rows(wh, "hour") == []


def _report(tmp_path: Path, *args: str, columns: int = 200) -> Any:
    return CliRunner().invoke(
        app,
        ["report", *args, "--config", str(tmp_path / "config.yaml")],
        env={"COLUMNS": str(columns)},
    )


def test_report_on_an_unknown_experiment_is_a_one_line_usage_error(
    reported: Pipeline, tmp_path: Path
) -> None:
    result = _report(tmp_path, "-e", "defualt")

    assert result.exit_code == 2
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "unknown experiment 'defualt'" in line and "default" in line


def test_report_counts_orphan_and_rejected_lines(
    wh: Pipeline, event_log: EventLogFolder, tmp_path: Path
) -> None:
    event_log.decisions(decision("e1", 0), "this is not json")
    event_log.outcomes(reward("e1", 10, 1.0), reward("nobody", 20, 1.0), reward("ghost", 30, 0.5))
    wh.ingest()
    wh.join(as_of=at(4000))

    table = _report(tmp_path)
    as_json = _report(tmp_path, "--format", "json")

    assert table.exit_code == 0, table.output
    assert "orphan rewards: 2" in table.stdout
    assert "quarantined lines: 1" in table.stdout
    assert "most often: not valid JSON (1)" in table.stdout
    assert orjson.loads(as_json.stdout)["counts"] == {
        "orphan_rewards": 2,
        "rejected_lines": 1,
        "quarantined_lines": 1,
    }


def test_report_counts_quarantined_lines_once_ingest_keeps_them(
    wh: Pipeline, event_log: EventLogFolder, tmp_path: Path
) -> None:
    event_log.decisions(decision("e1", 0), "not json", '{"EventId": 7}')
    wh.ingest()

    table = _report(tmp_path)
    as_json = _report(tmp_path, "--format", "json")

    assert "quarantined lines: 2" in table.stdout and "rejected lines" not in table.stdout
    assert orjson.loads(as_json.stdout)["counts"]["quarantined_lines"] == 2


@pytest.mark.parametrize("columns", [200, 100, 80, 64])
def test_report_table_fits_the_terminal_width(
    reported: Pipeline, tmp_path: Path, columns: int
) -> None:
    result = _report(tmp_path, columns=columns)

    assert result.exit_code == 0, result.output
    table_lines = result.stdout.split("\n\n")[0].splitlines()
    assert max(len(line) for line in table_lines) <= columns
    assert "m-1" in result.stdout and "2026-11-22 12:00" in result.stdout
    # The mean reward and its interval share one cell: 1/3 with half-width 1.96/3.
    assert "0.333 [-0.320, 0.987]" in result.stdout


def test_a_wide_terminal_shows_every_column_and_a_narrow_one_fewer(
    reported: Pipeline, tmp_path: Path
) -> None:
    wide = _report(tmp_path, columns=200).stdout
    narrow = _report(tmp_path, columns=80).stdout

    assert "mean p" in wide.split("columns:")[0] and "not shown" not in wide
    table, note = narrow.split("columns:")[0].split("not shown")
    assert "mean p" not in table and "mean p" in note


def test_a_very_narrow_terminal_gets_one_block_per_row(reported: Pipeline, tmp_path: Path) -> None:
    result = _report(tmp_path, columns=40)

    assert result.exit_code == 0, result.output
    assert "decisions: 3" in result.stdout and "decisions: 2" in result.stdout
    assert "late: 1" in result.stdout


def test_the_table_comes_with_a_legend_of_its_columns(reported: Pipeline, tmp_path: Path) -> None:
    result = _report(tmp_path, "--by", "model")

    legend = result.stdout.split("columns:")[1]
    for heading in ("model", "from", "decisions", "closed", "rewarded%", "reward [95% CI]", "late"):
        assert f"\n  {heading} " in legend
    assert "95% interval" in legend
