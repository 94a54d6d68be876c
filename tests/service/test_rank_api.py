"""POST /v1/rank through HTTP with the real lifespan, a trained VW model and real segments."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import vowpalwabbit
from fastapi.testclient import TestClient
from service_helpers import (
    ClientFactory,
    logged,
    publish_model,
    rank_body,
    train_model,
)

from cbloop.encoding import labelled_line
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop.vw import open_workspace
from cbloop_service.policy import predict_pmf

ReadLog = Callable[[str], list[dict[str, Any]]]


@pytest.fixture
def trained(make_settings: Callable[..., Settings]) -> tuple[Settings, str]:
    """Settings whose registry points at a model that clearly prefers action a2."""
    settings = make_settings()
    return settings, publish_model(settings, train_model(settings))


@pytest.fixture
def trained_client(trained: tuple[Settings, str], make_client: ClientFactory) -> TestClient:
    return make_client()


def _line_text(root: Path, event_id: str) -> str:
    base = root / "events" / "decisions"
    for path in base.rglob("*.jsonl*"):
        for raw in path.read_text().splitlines():
            if orjson.loads(raw)["EventId"] == event_id:
                return raw
    raise AssertionError(f"no decision line for {event_id}")


def test_pmf_sums_to_one_and_matches_vw_on_the_same_example(
    trained: tuple[Settings, str], trained_client: TestClient
) -> None:
    settings, model_id = trained
    r = trained_client.post("/v1/rank", json=rank_body(event_id="e-pmf"))
    assert r.status_code == 200
    answer = r.json()
    assert answer["model_id"] == model_id
    probabilities = {item["id"]: item["probability"] for item in answer["ranking"]}
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-12)

    # VW itself, loading the same registry model, scores the logged line.
    line = _line_text(settings.storage.root, "e-pmf")
    path = ModelRegistry(open_store(settings.storage)).fetch("default", model_id, Path())
    ws = open_workspace(settings.experiment("default").vw_arguments(), path)
    vw_pmf = ws.predict(line)
    ws.finish()
    decision = orjson.loads(line)
    ours = [probabilities[action_id] for action_id in decision["action_ids"]]
    total = sum(vw_pmf)
    assert ours == pytest.approx([p / total for p in vw_pmf], abs=1e-12)
    assert max(ours) > 0.5  # the trained model really is skewed, so the match means something


def test_answer_and_log_agree_on_choice_and_exact_probability(
    trained_client: TestClient, trained: tuple[Settings, str]
) -> None:
    settings, _ = trained
    answer = trained_client.post("/v1/rank", json=rank_body(event_id="e-agree")).json()
    (line,) = [d for d in logged(settings.storage.root, "decisions") if d["EventId"] == "e-agree"]
    assert line["action_ids"][line["a"][0] - 1] == answer["action_id"]
    assert line["p"][0] == answer["probability"]  # exactly, not approximately
    assert sorted(line["a"]) == list(range(1, len(line["action_ids"]) + 1))
    assert sum(line["p"]) == pytest.approx(1.0, abs=1e-12)
    assert line["model_id"] == answer["model_id"] == line["VWState"]["m"]
    assert 0.0 <= line["sample_prob"] < 1.0
    assert line["deferred"] is False


def test_same_event_id_gets_the_same_choice(client: TestClient) -> None:
    for i in range(20):
        body = rank_body(event_id=f"same-{i}")
        first = client.post("/v1/rank", json=body).json()
        again = client.post("/v1/rank", json=body).json()
        assert again["action_id"] == first["action_id"]
        assert again["probability"] == first["probability"]


def test_different_event_ids_explore_different_actions(client: TestClient) -> None:
    chosen = {
        client.post("/v1/rank", json=rank_body(event_id=f"spread-{i}")).json()["action_id"]
        for i in range(60)
    }
    assert len(chosen) > 1


def test_excluded_actions_are_never_chosen_nor_logged(
    client: TestClient, read_log: ReadLog
) -> None:
    for i in range(60):
        body = rank_body(n_actions=5, event_id=f"ex-{i}", excluded_actions=["a0", "a3"])
        answer = client.post("/v1/rank", json=body).json()
        assert answer["action_id"] not in {"a0", "a3"}
        assert answer["ranking"][-2:] == [
            {"id": "a0", "probability": 0.0},
            {"id": "a3", "probability": 0.0},
        ]
    for line in read_log("decisions"):
        assert line["action_ids"] == ["a1", "a2", "a4"]
        assert len(line["c"]["_multi"]) == 3


def test_ranking_starts_with_the_chosen_action_then_the_others_by_decreasing_probability(
    trained_client: TestClient,
) -> None:
    not_favourite = 0
    for i in range(200):
        answer = trained_client.post(
            "/v1/rank", json=rank_body(event_id=f"order-{i}", excluded_actions=["a1"])
        ).json()
        ranking = answer["ranking"]
        assert ranking[0] == {"id": answer["action_id"], "probability": answer["probability"]}
        others = [item["probability"] for item in ranking[1:-1]]
        assert others == sorted(others, reverse=True)
        assert ranking[-1] == {"id": "a1", "probability": 0.0}
        not_favourite += answer["action_id"] != "a2"  # a2 is the trained favourite
    # Exploration picked something other than the most probable action, and it still led.
    assert not_favourite > 0


def test_decision_line_is_read_by_vw_dsjson_parser(client: TestClient, read_log: ReadLog) -> None:
    client.post("/v1/rank", json=rank_body(n_actions=3, event_id="parse-me"))
    settings = client.app.state.service.settings  # type: ignore[attr-defined]
    raw = _line_text(settings.storage.root, "parse-me")
    ws = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet")
    examples = ws.parse(raw)
    assert len(examples) == 1 + 3  # the shared context plus one example per action
    ws.finish_example(examples)
    assert len(ws.predict(raw)) == 3
    ws.finish()


def test_logged_decision_becomes_training_data_vw_learns_from(
    client: TestClient, read_log: ReadLog
) -> None:
    client.post("/v1/rank", json=rank_body(n_actions=3, event_id="learn-me"))
    settings = client.app.state.service.settings  # type: ignore[attr-defined]
    raw = _line_text(settings.storage.root, "learn-me").encode()
    decision = orjson.loads(raw)
    chosen = decision["a"][0] - 1
    learner = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet --epsilon 0.2")
    line = labelled_line(raw, chosen=chosen, probability=decision["p"][0], reward=1.0).decode()
    for _ in range(5):
        learner.learn(line)
    pmf = learner.predict(raw.decode())
    learner.finish()
    # Greedy on the rewarded action: it gets 1 - epsilon + epsilon / 3, every other epsilon / 3.
    assert max(range(3), key=pmf.__getitem__) == chosen
    assert pmf[chosen] == pytest.approx(0.8 + 0.2 / 3, abs=1e-6)


def test_event_id_is_generated_when_absent(client: TestClient, read_log: ReadLog) -> None:
    answer = client.post("/v1/rank", json=rank_body()).json()
    assert len(answer["event_id"]) == 32
    assert [d["EventId"] for d in read_log("decisions")] == [answer["event_id"]]


def test_deferred_decision_is_logged_as_deferred(client: TestClient, read_log: ReadLog) -> None:
    client.post("/v1/rank", json=rank_body(event_id="later", defer_activation=True))
    (line,) = read_log("decisions")
    assert line["deferred"] is True


def test_context_and_features_are_logged_as_sent(client: TestClient, read_log: ReadLog) -> None:
    body = rank_body(n_actions=2, event_id="as-sent")
    body["context"]["user"]["score"] = 0.25
    client.post("/v1/rank", json=body)
    (line,) = read_log("decisions")
    # Numbers and booleans as sent; a string value gets the "=" that keeps it apart from
    # its key in VW's feature name (cbloop.encoding).
    assert line["c"]["user"] == {**body["context"]["user"], "city": "=paris"}
    assert line["c"]["_multi"][1] == {
        "item": {"topic": "=t1", "len": 101},
        "ActionId": {"id": "a1"},
    }


def test_second_experiment_is_served_by_its_own_model(make_client: ClientFactory) -> None:
    client = make_client(experiments={"other": {"exploration": {"type": "egreedy"}}})
    default = client.post("/v1/rank", json=rank_body()).json()
    other = client.post("/v1/rank", json=rank_body(experiment="other")).json()
    assert other["experiment"] == "other"
    assert other["model_id"] != default["model_id"]


def test_fast_predict_equals_workspace_predict(trained: tuple[Settings, str]) -> None:
    settings, model_id = trained
    path = ModelRegistry(open_store(settings.storage)).fetch("default", model_id, Path())
    ws = open_workspace(settings.experiment("default").vw_arguments(), path)
    body = rank_body()
    c = {
        **body["context"],
        "_multi": [{**a["features"], "ActionId": {"id": a["id"]}} for a in body["actions"]],
    }
    line = '{"a":[1],"c":' + orjson.dumps(c).decode() + "}"
    assert predict_pmf(ws, line) == ws.predict(line)
    ws.finish()
