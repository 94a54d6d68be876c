"""The promotion baseline: the deployed model's own on-policy value on the events it served."""

from __future__ import annotations

import duckdb
import numpy as np
import pytest
from conftest import LogAndJoin
from learning_world import skewed

from cbloop.settings import Settings
from cbloop_pipeline.learning import deploy_command, evaluate_command, train_command


def test_promotion_compares_with_the_deployed_models_on_policy_value(
    lsettings: Settings, log_and_join: LogAndJoin
) -> None:
    log_and_join(300, seed=1, policy=skewed)
    deployed = train_command(lsettings, "default").model
    assert deployed is not None
    assert deploy_command(lsettings, "default", model_id=deployed.model_id, force=True).promoted
    # The next traffic is served (and logged) by the deployed model.
    log_and_join(3000, seed=2, policy=skewed, model_id=deployed.model_id)
    candidate = train_command(lsettings, "default").model
    assert candidate is not None

    record = evaluate_command(lsettings, "default", model_id=candidate.model_id)

    assert record["baseline"] == "deployed_on_policy"
    body = record["policies"]["deployed"]
    on_policy = body["estimates"]["on_policy"]
    path = lsettings.storage.root / record["events_key"]
    con = duckdb.connect()
    try:
        rewards = np.array(
            con.execute(
                f"SELECT reward FROM read_parquet('{path}') WHERE served_by_deployed"
            ).fetchall(),
            dtype=np.float64,
        ).ravel()
        [(logged_by,)] = con.execute(
            f"SELECT DISTINCT logged_model_id FROM read_parquet('{path}') WHERE served_by_deployed"
        ).fetchall()
    finally:
        con.close()
    assert logged_by == deployed.model_id
    # Mean reward of exactly the events the deployed model served, with its own interval.
    assert body["served_events"] == on_policy["n"] == rewards.shape[0] > 0
    assert on_policy["value"] == pytest.approx(float(rewards.mean()))
    assert on_policy["ci_low"] < on_policy["value"] < on_policy["ci_high"]
    # Its off-policy estimates are still there, for comparison.
    assert {"ips", "dr", "sndr", "switch_dr"} <= set(body["estimates"])

    decision = deploy_command(lsettings, "default", model_id=candidate.model_id)

    assert decision.baseline == "deployed_on_policy"
    assert decision.deployed_value == pytest.approx(on_policy["value"])
    assert "on-policy mean reward" in decision.reason
