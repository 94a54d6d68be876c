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
            "learningMode": "Online",
            "logRetentionDays": -1,
        }
    )
    assert configuration_changes(body, settings, settings.experiment("default")) == {
        "reward.wait_seconds": 14400.0,
        "reward.default": -0.5,
        "reward.aggregation": "mean",
        "exploration.type": "egreedy",
        "exploration.epsilon": 0.2,
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


@pytest.mark.parametrize(
    ("wire", "mode"),
    [("Apprentice", "apprentice"), ("LoggingOnly", "logging_only"), ("Online", None)],
)
def test_the_learning_mode_maps_to_the_experiments_mode(wire: str, mode: str | None) -> None:
    settings = _settings()
    body = ServiceConfiguration.model_validate({"learningMode": wire})
    changes = configuration_changes(body, settings, settings.experiment("default"))
    assert changes == ({"mode": mode} if mode else {})
    apprentice = _settings(mode="apprentice")
    read = service_configuration(apprentice, apprentice.experiment("default"))
    assert read.learning_mode == "Apprentice"


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


def test_configuration_and_policy_writes_reach_every_worker(make_client: ClientFactory) -> None:
    # Two workers of one service: two apps on one storage root (one store, one catalog).
    first = make_client(experiments={"default": {"reward": {"wait_seconds": 300}}})
    second = make_client(experiments={"default": {"reward": {"wait_seconds": 300}}})
    read = first.get(CONFIG)
    assert read.status_code == 200
    assert read.json()["rewardWaitTime"] == "PT5M"

    written = first.put(CONFIG, json={**read.json(), "rewardWaitTime": "PT10M"})
    assert written.status_code == 200, written.text
    assert written.json()["rewardWaitTime"] == "PT10M"
    assert first.get(CONFIG).json()["rewardWaitTime"] == "PT10M"  # applied before answering
    arguments = "--cb_explore_adf --epsilon 0.1 --interactions :A -l 0.5"
    policy = first.put(POLICY, json={"name": "x", "arguments": arguments})
    assert policy.status_code == 200, policy.text
    # The whole policy is replaced: its learning flags, then its exploration.
    assert policy.json()["arguments"] == "--cb_explore_adf --interactions :A -l 0.5 --epsilon 0.1"

    _poll(second)  # what the other worker's watcher does within service.model_poll_seconds
    assert second.get(CONFIG).json()["rewardWaitTime"] == "PT10M"
    assert second.get(CONFIG).json()["explorationPercentage"] == 0.1
    assert second.get(POLICY).json()["arguments"] == policy.json()["arguments"]
    history = second.get("/v1/admin/experiments/default/history").json()["versions"]
    assert [v["why"] for v in history[-2:]] == [
        "Personalizer API: service configuration update",
        "Personalizer API: policy update",
    ]
    assert history[-1]["by"].startswith("personalizer-api")

    assert first.delete(POLICY).status_code == 200
    _poll(second)
    assert second.get(POLICY).json()["arguments"] == ExperimentSettings().vw_arguments()


def test_bad_configuration_and_policy_writes_change_nothing(client: TestClient) -> None:
    before = client.get(CONFIG).json()
    bad = client.put(CONFIG, json={**before, "rewardWaitTime": "ten minutes"})
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "BadRequest"
    assert bad.json()["error"]["innerError"] == {"code": "InvalidServiceConfiguration"}
    refused = client.put(POLICY, json={"name": "x", "arguments": "--cb_explore_adf --data f"})
    assert refused.status_code == 400
    assert "not allowed" in refused.json()["error"]["message"]
    too_big = client.patch(CONFIG, json={"defaultReward": 5e6})
    assert too_big.status_code == 400
    assert client.get(CONFIG).json() == before
    history = client.get("/v1/admin/experiments/default/history").json()["versions"]
    assert len(history) == 1


def test_another_writer_can_be_given_to_the_app(make_client: ClientFactory) -> None:
    client = make_client()
    writer = AppliedWriter(_app_settings(client))
    client.app.state.experiment_writer = writer  # type: ignore[attr-defined]
    assert client.patch(CONFIG, json={"defaultReward": 0.25}).status_code == 200
    assert writer.applied == [("default", {"reward.default": 0.25})]


def _poll(client: TestClient) -> None:
    assert client.app.state.service.experiments.poll_safely()  # type: ignore[attr-defined]


def _app_settings(client: TestClient) -> Settings:
    settings: Settings = client.app.state.service.settings  # type: ignore[attr-defined]
    return settings
