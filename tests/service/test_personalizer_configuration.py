"""Personalizer's configuration and policy <-> cbloop experiment settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import ClientFactory

from cbloop.settings import ExperimentSettings, Settings
from cbloop_service.personalizer.configuration import (
    ConfigurationError,
    configuration_changes,
    duration_seconds,
    duration_text,
    policy_changes,
    service_configuration,
)
from cbloop_service.personalizer.schemas import ServiceConfiguration

CONFIG = "/personalizer/v1.0/configurations/service"
POLICY = "/personalizer/v1.0/configurations/policy"


class AppliedWriter:
    """An ExperimentWriter that validates and keeps the changes (the store comes with `exps`)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.applied: list[tuple[str, dict[str, Any]]] = []

    def apply(self, experiment: str, changes: Mapping[str, Any]) -> ExperimentSettings:
        data = self.settings.experiment(experiment).model_dump()
        for key, value in changes.items():
            node = data
            *parents, last = key.split(".")
            for part in parents:
                node = node[part]
            node[last] = value
        self.applied.append((experiment, dict(changes)))
        return ExperimentSettings.model_validate(data)


def _settings(**experiment: Any) -> Settings:
    return Settings.model_validate({"experiments": {"default": experiment}})


def test_durations_are_iso_8601() -> None:
    assert duration_text(600) == "PT10M"
    assert duration_text(4 * 3600) == "PT4H"
    assert duration_seconds("PT5S", "f") == 5
    assert duration_seconds("P1DT2H", "f") == 26 * 3600
    with pytest.raises(ConfigurationError, match=r"rewardWaitTime.*ISO 8601"):
        duration_seconds("10 minutes", "rewardWaitTime")
    with pytest.raises(ConfigurationError, match=re.escape("not 'P1M'")):
        duration_seconds("P1M", "rewardWaitTime")


def test_the_configuration_reads_the_experiment_settings() -> None:
    settings = _settings(
        reward={"wait_seconds": 300, "default": None, "aggregation": "mean"},
        exploration={"type": "egreedy", "epsilon": 0.1},
    )
    config = service_configuration(settings, settings.experiment("default"))
    assert config.reward_wait_time == "PT5M"
    assert config.default_reward is None
    assert config.reward_aggregation == "average"
    assert config.exploration_percentage == 0.1
    assert config.learning_mode == "Online"
    squarecb = service_configuration(_settings(), _settings().experiment("default"))
    assert squarecb.exploration_percentage is None  # SquareCB has no exploration share


def test_a_configuration_write_becomes_settings_changes() -> None:
    settings = _settings()
    body = ServiceConfiguration.model_validate(
        {
            "rewardWaitTime": "PT4H",
            "defaultReward": -0.5,
            "rewardAggregation": "average",
            "explorationPercentage": 0.2,
            "learningMode": "Apprentice",
            "logRetentionDays": -1,
        }
    )
    assert configuration_changes(body, settings, settings.experiment("default")) == {
        "reward.wait_seconds": 14400.0,
        "reward.default": -0.5,
        "reward.aggregation": "mean",
        "exploration.type": "egreedy",
        "exploration.epsilon": 0.2,
        "learning_mode": "apprentice",
    }
    # What GET answered, sent back unchanged, changes nothing.
    unchanged = service_configuration(settings, settings.experiment("default"))
    assert configuration_changes(unchanged, settings, settings.experiment("default")) == {}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rewardAggregation": "median"}, "rewardAggregation"),
        ({"learningMode": "Offline"}, "learningMode"),
        ({"logRetentionDays": 30}, "retention.joined_segments_days"),
        ({"modelExportFrequency": "PT5M"}, "service.model_poll_seconds"),
        ({"isAutoOptimizationEnabled": True}, "no such feature"),
    ],
)
def test_configuration_values_cbloop_cannot_take_are_refused(
    body: dict[str, Any], message: str
) -> None:
    settings = _settings()
    config = ServiceConfiguration.model_validate(body)
    with pytest.raises(ConfigurationError, match=message):
        configuration_changes(config, settings, settings.experiment("default"))


def test_a_personalizer_policy_splits_into_vw_args_and_exploration() -> None:
    changes = policy_changes("--cb_explore_adf --epsilon 0.2 --power_t 0 -l 0.001 -q ::")
    assert changes == {
        "vw_args": "--power_t 0 -l 0.001 -q ::",
        "exploration.type": "egreedy",
        "exploration.epsilon": 0.2,
    }
    assert policy_changes("--cb_explore_adf --bag 4 --epsilon=0.05")["exploration.type"] == "bag"
    assert policy_changes("-b 20")["exploration.type"] == "squarecb"
    with pytest.raises(ConfigurationError, match="not allowed"):
        policy_changes("--cb_explore_adf -d /etc/passwd")
    with pytest.raises(ConfigurationError, match="needs a number"):
        policy_changes("--epsilon lots")


def test_configuration_routes_read_settings_and_write_through_the_writer(
    make_client: ClientFactory,
) -> None:
    client = make_client(experiments={"default": {"reward": {"wait_seconds": 300}}})
    read = client.get(CONFIG)
    assert read.status_code == 200
    assert read.json()["rewardWaitTime"] == "PT5M"
    body = {**read.json(), "rewardWaitTime": "PT10M"}
    without_store = client.put(CONFIG, json=body)
    assert without_store.status_code == 501
    assert "experiment store" in without_store.json()["error"]["message"]

    writer = AppliedWriter(_app_settings(client))
    client.app.state.experiment_writer = writer  # type: ignore[attr-defined]
    written = client.put(CONFIG, json=body)
    assert written.status_code == 200
    assert written.json()["rewardWaitTime"] == "PT10M"  # the writer's result
    assert client.patch(CONFIG, json={"defaultReward": 0.25}).status_code == 200
    assert writer.applied == [
        ("default", {"reward.wait_seconds": 600.0}),
        ("default", {"reward.default": 0.25}),
    ]
    bad = client.put(CONFIG, json={**body, "rewardWaitTime": "ten minutes"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "BadRequest"
    assert bad.json()["error"]["innerError"] == {"code": "InvalidServiceConfiguration"}
    assert len(writer.applied) == 2

    policy = client.put(POLICY, json={"name": "x", "arguments": "--cb_explore_adf --epsilon 0.1"})
    assert policy.status_code == 200, policy.text
    assert "--epsilon 0.1" in policy.json()["arguments"]
    refused = client.put(POLICY, json={"name": "x", "arguments": "--cb_explore_adf --data f"})
    assert refused.status_code == 400
    assert "not allowed" in refused.json()["error"]["message"]
    assert client.delete(POLICY).status_code == 200
    assert writer.applied[-1][1]["exploration.type"] == "squarecb"


def _app_settings(client: TestClient) -> Settings:
    settings: Settings = client.app.state.service.settings  # type: ignore[attr-defined]
    return settings
