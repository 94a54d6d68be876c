"""`cbloop evaluate`: estimates anyone can recompute, intervals that cover the truth."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import orjson
import pytest
import vowpalwabbit
from click.testing import Result
from conftest import LogAndJoin
from learning_world import skewed, true_value

from cbloop.encoding import STRING_VALUE_PREFIX
from cbloop.registry import ModelMetadata, ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.evaluate import EVENT_COLUMNS
from cbloop_pipeline.learning import deploy_command, evaluate_command, train_command
from cbloop_pipeline.ope.logged import read_logged_events
from cbloop_pipeline.ope.scoring import score_file
from cbloop_pipeline.warehouse import connect


def _two_models(
    settings: Settings, log_and_join: LogAndJoin
) -> tuple[ModelMetadata, ModelMetadata]:
    """A deployed model trained on a little data and a candidate trained on more."""
    log_and_join(300, seed=1, policy=skewed)
    deployed = train_command(settings, "default").model
    assert deployed is not None
    assert deploy_command(settings, "default", model_id=deployed.model_id, force=True).promoted
    log_and_join(3000, seed=2, policy=skewed)
    candidate = train_command(settings, "default").model
    assert candidate is not None
    return deployed, candidate


def _registry(settings: Settings) -> ModelRegistry:
    return ModelRegistry(open_store(settings.storage))


def _events(settings: Settings, record: dict[str, Any]) -> dict[str, np.ndarray]:
    path = settings.storage.root / record["events_key"]
    con = duckdb.connect()
    try:
        cursor = con.execute(f"SELECT * FROM read_parquet('{path}')")
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchall()
    finally:
        con.close()
    assert tuple(names) == EVENT_COLUMNS
    return {name: np.array([r[i] for r in rows]) for i, name in enumerate(names)}


def _eval_lines(settings: Settings, record: dict[str, Any]) -> list[bytes]:
    con = connect(settings.warehouse)
    try:
        keys = [
            str(k)
            for (k,) in con.execute(
                "SELECT eval_key FROM join_jobs WHERE list_contains(?, join_id) ORDER BY job_seq",
                [record["joins"]],
            ).fetchall()
        ]
    finally:
        con.close()
    lines: list[bytes] = []
    for key in keys:
        lines += [ln for ln in (settings.storage.root / key).read_bytes().split(b"\n") if ln]
    return lines


def test_ips_and_snips_equal_an_independent_computation_over_the_events_file(
    lsettings: Settings, log_and_join: LogAndJoin, tmp_path: Path
) -> None:
    deployed, candidate = _two_models(lsettings, log_and_join)
    record = evaluate_command(lsettings, "default", model_id=candidate.model_id)
    assert record["deployed_model_id"] == deployed.model_id
    ev = _events(lsettings, record)
    lines = _eval_lines(lsettings, record)
    assert record["n_events"] == len(lines) == len(ev["event_id"])

    # The logged side, read straight from the joined export.
    parsed = [orjson.loads(ln) for ln in lines]
    assert list(ev["event_id"]) == [p["EventId"] for p in parsed]
    np.testing.assert_array_equal(ev["reward"], [-p["_label_cost"] for p in parsed])
    np.testing.assert_array_equal(
        ev["logged_probability"], [p["_label_probability"] for p in parsed]
    )

    # The target side, by asking VW one line at a time.
    model = _registry(lsettings).fetch("default", candidate.model_id, tmp_path)
    ws = vowpalwabbit.Workspace(
        arg_list=[*candidate.vw_args.split(), "--dsjson", "--quiet", "-t", "-i", str(model)]
    )
    try:
        target = [
            ws.predict(ln.decode())[p["_label_Action"] - 1]
            for ln, p in zip(lines, parsed, strict=True)
        ]
    finally:
        ws.finish()
    np.testing.assert_allclose(ev["target_probability"], target, atol=2e-6)

    summary = json.loads((lsettings.storage.root / record["summary_key"]).read_text())
    for role, prob, dm_policy in (
        ("candidate", "target_probability", "dm_policy"),
        ("deployed", "deployed_target_probability", "deployed_dm_policy"),
    ):
        w = ev[prob] / ev["logged_probability"]
        r = ev["reward"]
        estimates = summary["policies"][role]["estimates"]
        # raw_value: before the clip to the reward range [0, 1] (value = the clipped one).
        ips = float(np.mean(w * r))
        assert estimates["ips"]["raw_value"] == pytest.approx(ips, rel=1e-12)
        assert estimates["ips"]["value"] == pytest.approx(min(max(ips, 0.0), 1.0), rel=1e-12)
        assert estimates["snips"]["raw_value"] == pytest.approx(
            float(np.sum(w * r) / np.sum(w)), rel=1e-12
        )
        dr = np.mean(ev[dm_policy] + w * (r - ev["dm_logged"]))
        assert estimates["dr"]["raw_value"] == pytest.approx(float(dr), rel=1e-12)
        # The audit file's per-event terms reproduce every estimator.
        prefix = "term_" if role == "candidate" else "deployed_term_"
        for name in ("ips", "dr", "sndr", "switch_dr", "snips"):
            assert estimates[name]["raw_value"] == pytest.approx(
                float(np.mean(ev[prefix + name])), rel=1e-9
            )
        assert estimates["ips"]["max_weight"] == pytest.approx(float(w.max()))
        assert estimates["ips"]["ess"] == pytest.approx(float(w.sum() ** 2 / (w**2).sum()))
    assert summary["policies"]["logging"]["estimates"]["logging"]["value"] == pytest.approx(
        float(ev["reward"].mean())
    )
    assert (
        summary["effective_sample_size"]
        == summary["policies"]["candidate"]["estimates"]["ips"]["ess"]
    )
    # The registry holds the same record.
    stored = _registry(lsettings).metadata("default", candidate.model_id).evaluations[-1]
    assert stored["eval_id"] == summary["eval_id"]


def test_dr_and_ips_intervals_cover_the_true_value_of_both_policies(
    lsettings: Settings, log_and_join: LogAndJoin, tmp_path: Path
) -> None:
    deployed, candidate = _two_models(lsettings, log_and_join)
    record = evaluate_command(lsettings, "default", model_id=candidate.model_id)
    ev = _events(lsettings, record)
    segments = {
        # The logged value is "=s<k>": cbloop.encoding marks string values with "=".
        str(e): int(orjson.loads(ln)["c"]["user"]["seg"].removeprefix(STRING_VALUE_PREFIX)[1:])
        for e, ln in zip(ev["event_id"], _eval_lines(lsettings, record), strict=True)
    }

    data = tmp_path / "eval.dsjson"
    data.write_bytes(b"\n".join(_eval_lines(lsettings, record)) + b"\n")
    logged = read_logged_events(data)
    vw_args = lsettings.experiment("default").vw_arguments()
    for role, meta in (("candidate", candidate), ("deployed", deployed)):
        scores = score_file(
            data,
            _registry(lsettings).fetch("default", meta.model_id, tmp_path),
            vw_args,
            logged=logged,
        )
        truth = true_value(
            [scores.event_pmf(i) for i in range(logged.n)],
            [segments[str(e)] for e in logged.event_id],
        )
        for name in ("ips", "dr"):
            est = record["policies"][role]["estimates"][name]
            assert est["ci_low"] <= truth <= est["ci_high"], (role, name, est, truth)
    # The skewed logging policy is worse than both learned policies, and DR is the tighter
    # (by standard error: both intervals are clipped at the reward range's top, 1).
    cand = record["policies"]["candidate"]["estimates"]
    assert cand["dr"]["std_error"] < cand["ips"]["std_error"]
    assert record["policies"]["logging"]["estimates"]["logging"]["value"] < cand["dr"]["value"]


def test_evaluate_mirrors_into_the_warehouse_and_plots_on_request(
    lsettings: Settings, log_and_join: LogAndJoin, cli: Callable[..., Result]
) -> None:
    _, job1 = log_and_join(400, seed=1)
    _, job2 = log_and_join(400, seed=2)
    assert train_command(lsettings, "default").model is not None
    result = cli("evaluate", "--join", job2.join_id, "--plot")
    assert result.exit_code == 0, result.output
    assert "ips" in result.output and "dr *" in result.output

    con = connect(lsettings.warehouse)
    try:
        [(eval_id, n, joins, events_key)] = con.execute(
            "SELECT eval_id, n_events, joins, events_key FROM evaluations"
        ).fetchall()
        estimates = con.execute(
            "SELECT policy, estimator FROM evaluation_estimates WHERE eval_id = ? ORDER BY ALL",
            [eval_id],
        ).fetchall()
    finally:
        con.close()
    assert n == job2.eval_events and joins == [job2.join_id]
    assert events_key == f"evaluations/default/{eval_id}/events.parquet"
    # No model deployed yet: the candidate and the logging policy only.
    assert estimates == [
        ("candidate", "dr"),
        ("candidate", "ips"),
        ("candidate", "sndr"),
        ("candidate", "snips"),
        ("candidate", "switch_dr"),
        ("logging", "logging"),
    ]
    png = lsettings.storage.root / f"evaluations/default/{eval_id}/estimates.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert job1.eval_events > 0


def test_evaluate_names_a_missing_join(
    lsettings: Settings, log_and_join: LogAndJoin, cli: Callable[..., Result]
) -> None:
    log_and_join(200, seed=1)
    train_command(lsettings, "default")
    result = cli("evaluate", "--join", "j-nope")
    assert result.exit_code == 2
    assert "no join j-nope" in result.output
