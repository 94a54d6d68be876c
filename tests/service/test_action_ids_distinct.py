"""Action ids VW used to conflate (`sku:1`, `sku 1`, `sku_1`) learn separately end to end:
ranked and rewarded over HTTP, trained by VW from the logged lines, served again."""

from __future__ import annotations

from pathlib import Path

import orjson
from fastapi.testclient import TestClient
from service_helpers import ClientFactory, app_settings, publish_model
from test_model_swap import served_model, wait_for

from cbloop.encoding import labelled_line
from cbloop.vw import open_workspace

ACTIONS = ["sku:1", "sku 1", "sku_1", "sku|1"]
BODY = {"context": {"user": {"seg": "a b"}}, "actions": [{"id": a} for a in ACTIONS]}


def _raw_decisions(root: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted((root / "events" / "decisions").rglob("*.jsonl*")):
        lines.extend(raw for raw in path.read_bytes().splitlines() if raw)
    return lines


def _probabilities(client: TestClient, event_id: str) -> dict[str, float]:
    answer = client.post("/v1/rank", json={**BODY, "event_id": event_id}).json()
    return {item["id"]: item["probability"] for item in answer["ranking"]}


def test_actions_vw_would_conflate_learn_separately(make_client: ClientFactory) -> None:
    client = make_client(service={"model_poll_seconds": 0.05})
    settings = app_settings(client)
    rewards: dict[str, float] = {}
    for i in range(400):
        event_id = f"sku-{i}"
        answer = client.post("/v1/rank", json={**BODY, "event_id": event_id}).json()
        rewards[event_id] = 1.0 if answer["action_id"] == "sku:1" else 0.0
        reward = client.post(f"/v1/events/{event_id}/reward", json={"value": rewards[event_id]})
        assert reward.status_code == 202
    assert 0 < sum(rewards.values()) < len(rewards)

    # The logged lines, byte for byte as the join exports them, train a real VW model.
    args = settings.experiment("default").vw_arguments()
    ws = open_workspace(args)
    for raw in _raw_decisions(settings.storage.root):
        decision = orjson.loads(raw)
        chosen = decision["a"][0] - 1
        ws.learn(
            labelled_line(
                raw,
                chosen=chosen,
                probability=decision["p"][0],
                reward=rewards[decision["EventId"]],
            ).decode()
        )
    model_file = settings.storage.root.parent / "sku.vw"
    ws.save(str(model_file))
    ws.finish()
    model_id = publish_model(settings, model_file)
    wait_for(lambda: served_model(client) == model_id, "the trained model to serve")

    pmf = _probabilities(client, "after")
    assert pmf["sku:1"] > 0.5
    for other in ("sku 1", "sku_1", "sku|1"):
        # Conflated, all four would share sku:1's weights and its probability.
        assert pmf[other] < pmf["sku:1"] / 3, pmf
