"""The official Personalizer Python SDK (azure-ai-personalizer) pointed at a running cbloop.

The app runs under uvicorn on a loopback port with its real lifespan; the SDK builds its own
URLs (`{endpoint}/personalizer/...?api-version=2022-09-01-preview`), sends the key in
`Ocp-Apim-Subscription-Key` and checks the status codes it expects (rank 201, reward and
activate 204, model import and reset 204).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from azure.ai.personalizer import PersonalizerAdministrationClient, PersonalizerClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from personalizer_helpers import CONTEXT, actions, decisions, outcomes, settings_at

from cbloop.settings import Settings
from cbloop_service.app import create_app

KEYS = {"api_keys": ["client-key"], "admin_api_keys": ["admin-key"]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Settings]]:
    settings = settings_at(tmp_path / "data", service=KEYS, experiments={"shop": {}})
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", settings
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_the_python_sdk_ranks_rewards_and_activates(served: tuple[str, Settings]) -> None:
    endpoint, settings = served
    client: Any = PersonalizerClient(endpoint, AzureKeyCredential("client-key"))
    answer = client.rank(
        {
            "contextFeatures": CONTEXT,
            "actions": actions(),
            "excludedActions": ["a1"],
            "eventId": "sdk-1",
            "deferActivation": True,
        }
    )
    assert answer["eventId"] == "sdk-1"
    assert answer["rewardActionId"] == answer["ranking"][0]["id"] != "a1"
    assert client.activate("sdk-1") is None
    assert client.reward("sdk-1", {"value": 0.5}) is None
    shop: Any = PersonalizerClient(f"{endpoint}/experiments/shop", AzureKeyCredential("client-key"))
    assert shop.rank({"contextFeatures": CONTEXT, "actions": actions(2)})["eventId"]

    (first, second, *_) = decisions(settings)
    assert (first["EventId"], first["experiment"], first["deferred"]) == ("sdk-1", "default", True)
    assert second["experiment"] == "shop"
    assert [(o["kind"], o.get("value")) for o in outcomes(settings)] == [
        ("activate", None),
        ("reward", 0.5),
    ]
    with pytest.raises(HttpResponseError) as bad:
        client.rank({"contextFeatures": CONTEXT, "actions": []})
    assert bad.value.status_code == 400
    assert bad.value.error is not None and bad.value.error.code == "BadRequest"
    with pytest.raises(HttpResponseError) as multi:
        client.rank_multi_slot(
            {"actions": actions(2), "slots": [{"id": "s", "baselineAction": "a0"}]}
        )
    assert multi.value.status_code == 501
    # Endpoints are often copied with their trailing slash: the SDK then sends //personalizer.
    slashed: Any = PersonalizerClient(f"{endpoint}/", AzureKeyCredential("client-key"))
    assert slashed.rank({"contextFeatures": CONTEXT, "actions": actions(2)})["eventId"]
    slashed_shop: Any = PersonalizerClient(
        f"{endpoint}/experiments/shop/", AzureKeyCredential("client-key")
    )
    assert slashed_shop.rank({"contextFeatures": CONTEXT, "actions": actions(2)})["eventId"]
    experiments = [d["experiment"] for d in decisions(settings)]
    assert experiments == ["default", "shop", "default", "shop"]
    wrong_key: Any = PersonalizerClient(endpoint, AzureKeyCredential("nope"))
    with pytest.raises(HttpResponseError) as denied:
        wrong_key.rank({"actions": actions(2)})
    assert denied.value.status_code == 401


def test_the_python_sdk_administers_the_model_and_reads_the_configuration(
    served: tuple[str, Settings],
) -> None:
    endpoint, settings = served
    admin = PersonalizerAdministrationClient(endpoint, AzureKeyCredential("admin-key"))
    config = admin.get_service_configuration()
    assert config["rewardWaitTime"] == "PT10M"
    assert config["learningMode"] == "Online"
    policy = admin.get_policy()
    assert policy["arguments"] == settings.experiment("default").vw_arguments()

    exported = b"".join(admin.export_model())
    assert admin.import_model(exported) is None
    assert admin.reset_model() is None
    properties = admin.get_model_properties()
    assert properties["creationTime"]
    with pytest.raises(HttpResponseError) as refused:
        admin.import_model(b"not a model")
    assert refused.value.status_code == 400
    updated = admin.update_policy({"name": "p", "arguments": "--cb_explore_adf --epsilon 0.2"})
    assert updated["arguments"].endswith("--epsilon 0.2")
    assert admin.get_service_configuration()["explorationPercentage"] == 0.2
    as_client = PersonalizerAdministrationClient(endpoint, AzureKeyCredential("client-key"))
    with pytest.raises(HttpResponseError) as forbidden:
        as_client.get_policy()
    assert forbidden.value.status_code == 403
