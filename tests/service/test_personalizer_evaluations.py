"""Personalizer's offline evaluations: created over HTTP, run by the learning loop, read back."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from azure.ai.personalizer import PersonalizerAdministrationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError
from click.testing import Result
from fastapi.testclient import TestClient
from service_helpers import ClientFactory
from test_personalizer_sdk import served  # noqa: F401 - the SDK tests' running server
from tuning_world import EXPERIMENT, log_and_join

from cbloop.clock import parse_ts
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.join_catalog import finished_joins
from cbloop_pipeline.tuning.runs import estimate_dict, prepared, train_and_score
from cbloop_pipeline.warehouse import connect
from cbloop_service.app import create_app
from cbloop_service.personalizer.evaluations import policy_spec

PREVIEW = "/personalizer/evaluations"
QUERY = "?api-version=2022-09-01-preview"
V1 = "/personalizer/v1.0/evaluations"
CROSS_ARGUMENTS = "--cb_explore_adf -q ui -b 18 --squarecb"


def _body(**overrides: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "name": "cross or not",
        "startTime": (now - timedelta(hours=2)).isoformat(),
        "endTime": now.isoformat(),
        "policies": [{"name": "cross", "arguments": CROSS_ARGUMENTS}],
    }
    body.update(overrides)
    return body


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.fixture
def world(make_settings: Callable[..., Settings]) -> Settings:
    """The tuning world (reward needs the user x item cross), logged and joined."""
    settings = make_settings(experiments={"default": EXPERIMENT})
    log_and_join(settings, 1500, seed=11)
    return settings


def _direct(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each policy's estimates computed straight with the code `cbloop search` uses."""
    experiment = settings.experiment("default")
    con = connect(settings.warehouse, read_only=True)
    try:
        joins = finished_joins(con, "default")
    finally:
        con.close()
    policies = {
        "Online Policy": experiment,
        "cross": policy_spec("cross", CROSS_ARGUMENTS).settings(experiment),
    }
    out = {}
    with prepared(
        open_store(settings.storage),
        joins,
        experiment.vw_arguments(),
        folds=2,
        seed=0,
        confidence=0.95,
    ) as data:
        for name, policy in policies.items():
            scored = train_and_score(data, policy.vw_arguments(), name)
            out[name] = {k: estimate_dict(v) for k, v in scored.result.estimates.items()}
    return out


def test_an_evaluation_created_over_http_is_run_by_the_loop_with_cbloops_figures(
    world: Settings, cli: Callable[..., Result]
) -> None:
    with TestClient(create_app(world)) as client:
        put = client.put(f"{PREVIEW}/cmp-1{QUERY}", json=_body())
        assert put.status_code == 200, put.text
        assert put.json()["status"] == "NotSubmitted"
        post = client.post(V1, json=_body(name="v1"))
        assert post.status_code == 201, post.text
        v1_id = post.json()["id"]
        assert post.json()["status"] == "pending"
        assert client.get(f"{PREVIEW}/cmp-1{QUERY}").json()["status"] == "NotSubmitted"

        # The logs span the world's decisions, to the hour (read from the segment listing).
        span = client.get("/personalizer/v1.0/logs/properties").json()["dateRange"]
        logged = [
            parse_ts(orjson.loads(line)["Timestamp"])
            for path in (world.storage.root / "events" / "decisions").rglob("*.jsonl")
            for line in path.read_bytes().splitlines()
        ]
        start, end = parse_ts(span["from"]), parse_ts(span["to"])
        assert start <= min(logged) <= max(logged) <= end
        assert (start.minute, start.second) == (0, 0)
        assert end - start <= timedelta(hours=2)

        ran = cli("loop", "--once")
        assert ran.exit_code == 0, ran.output
        assert "evaluation cmp-1 succeeded" in ran.output

        got = client.get(f"{PREVIEW}/cmp-1{QUERY}")
        assert got.status_code == 200, got.text
        evaluation = got.json()
        assert evaluation["status"] == "Succeeded", evaluation["description"]
        v1 = client.get(f"{V1}/{v1_id}").json()
        assert v1["status"] == "completed"

        # The winner becomes the experiment's policy (a new version in the store).
        apply = "/personalizer/v1.0/configurations/applyFromEvaluation"
        missing = _error(client.post(apply, json={"evaluationId": "cmp-1", "policyName": "x"}), 404)
        assert missing["innerError"]["code"] == "LearningSettingsNotFound"
        applied = client.post(apply, json={"evaluationId": "cmp-1", "policyName": "cross"})
        assert applied.status_code == 204, applied.text
        policy = client.get("/personalizer/v1.0/configurations/policy").json()
        assert (
            policy["arguments"]
            == policy_spec("cross", CROSS_ARGUMENTS)
            .settings(world.experiment("default"))
            .vw_arguments()
        )

    direct = _direct(world)
    # The loop's own `evaluate` step scored the model it trained on the same joins: the
    # evaluation's Online Policy (the same settings, trained on the same events) equals it.
    evaluated = [
        m.evaluations[-1]
        for m in ModelRegistry(open_store(world.storage)).list_models("default")
        if m.evaluations
    ]
    assert len(evaluated) == 1
    online_answer = {r["name"]: r for r in evaluation["policyResults"]}["Online Policy"]
    assert online_answer["estimates"] == evaluated[0]["policies"]["candidate"]["estimates"]
    assert (
        evaluation["loggingPolicy"] == evaluated[0]["policies"]["logging"]["estimates"]["logging"]
    )
    for answer in (
        evaluation["content"]["value"],
        evaluation["policyResults"],
        v1["policyResults"],
    ):
        results = {r["name"]: r for r in answer}
        assert list(results) == ["Online Policy", "cross"]
        for name, expected in direct.items():
            assert results[name]["estimates"] == expected
            total = results[name]["totalSummary"]
            assert results[name]["summary"] == [total]
            assert total["ipsEstimatorDenominator"] == expected["ips"]["n"]
            assert total["ipsEstimatorNumerator"] / total["ipsEstimatorDenominator"] == (
                pytest.approx(expected["ips"]["raw_value"], rel=1e-9)
            )
            assert total["ipsEstimatorNumerator"] / total["snipsEstimatorDenominator"] == (
                pytest.approx(expected["snips"]["raw_value"], rel=1e-9)
            )
        assert results["cross"]["policySource"] == "Custom"
        assert results["Online Policy"]["policySource"] == "Online"
    # The known answer of this world: only the cross finds the good action.
    assert direct["cross"]["dr"]["value"] > direct["Online Policy"]["dr"]["value"] + 0.1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"policies": None}, "policies"),
        ({"name": None}, "name"),
        ({"endTime": "2026-01-01T00:00:00Z", "startTime": "2026-01-02T00:00:00Z"}, "endTime"),
        ({"startTime": "yesterday"}, "startTime"),
        ({"policies": [{"name": "p", "arguments": "--data /etc/passwd"}]}, "--data"),
        ({"policies": [{"name": "p", "arguments": "--epsilon lots"}]}, "--epsilon"),
        (
            {"policies": [{"name": "p", "arguments": "-q ui"}, {"name": "p", "arguments": ""}]},
            "unique",
        ),
        ({"policies": [{"name": "Online Policy", "arguments": "-q ui"}]}, "taken"),
        ({"enablePolicyOptimization": True}, "cbloop search"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_evaluation_bodies_get_personalizer_400s_and_nothing_is_stored(
    make_client: ClientFactory, change: dict[str, Any], message: str
) -> None:
    client = make_client()
    body = {k: v for k, v in {**_body(), **change}.items() if v is not None}
    for response in (
        client.put(f"{PREVIEW}/e1{QUERY}", json=body),
        client.post(V1, json=body),
    ):
        error = _error(response, 400)
        assert error["code"] == "BadRequest"
        assert error["innerError"]["code"] == "InvalidEvaluationContract"
        assert message in error["message"]
    assert client.get(f"{V1}").json() == []


def test_evaluations_are_listed_deleted_and_unknown_ids_are_404(make_client: ClientFactory) -> None:
    client = make_client()
    empty = client.get("/personalizer/v1.0/logs/properties").json()
    assert empty == {"dateRange": {"from": None, "to": None}}
    assert client.put(f"{PREVIEW}/a{QUERY}", json=_body(name="first")).status_code == 200
    assert client.put(f"{PREVIEW}/b{QUERY}", json=_body(name="second")).status_code == 200
    again = _error(client.put(f"{PREVIEW}/a{QUERY}", json=_body()), 409)
    assert again["innerError"]["code"] == "EvaluationAlreadyExists"

    listed = client.get(f"{PREVIEW}{QUERY}").json()
    assert [e["id"] for e in listed["value"]] == ["a", "b"]
    assert {e["status"] for e in listed["value"]} == {"NotSubmitted"}
    assert [e["name"] for e in client.get(V1).json()] == ["first", "second"]
    paged = client.get(f"{PREVIEW}{QUERY}&skip=1&top=1").json()["value"]
    assert [e["id"] for e in paged] == ["b"]
    assert _error(client.get(f"{PREVIEW}{QUERY}&top=-1"), 400)["code"] == "BadRequest"

    apply = "/personalizer/v1.0/configurations/applyFromEvaluation"
    pending = _error(client.post(apply, json={"evaluationId": "a", "policyName": "cross"}), 400)
    assert "has not succeeded" in pending["message"]
    assert client.delete(f"{PREVIEW}/a{QUERY}").status_code == 204
    for response in (
        client.get(f"{PREVIEW}/a{QUERY}"),
        client.delete(f"{V1}/a"),
        client.get(f"{V1}/never"),
    ):
        error = _error(response, 404)
        assert error["code"] == "ResourceNotFound"
        assert error["innerError"]["code"] == "EvaluationNotFound"
    assert [e["id"] for e in client.get(V1).json()] == ["b"]
    bad_id = _error(client.get(f"{V1}/bad%20id"), 400)
    assert "evaluation id" in bad_id["message"]


def test_evaluations_need_an_admin_key(make_client: ClientFactory) -> None:
    client = make_client(service={"api_keys": ["c"], "admin_api_keys": ["a"]})
    assert client.get(V1, headers={"Ocp-Apim-Subscription-Key": "c"}).status_code == 403
    created = client.post(V1, json=_body(), headers={"Ocp-Apim-Subscription-Key": "a"})
    assert created.status_code == 201, created.text


FEATURES = "/personalizer/featureImportances"


def test_a_feature_importance_created_over_http_is_run_by_the_cli(
    make_settings: Callable[..., Settings], cli: Callable[..., Result]
) -> None:
    settings = make_settings(experiments={"default": {**EXPERIMENT, "vw_args": "-q ui -b 18"}})
    log_and_join(settings, 1500, seed=11)
    body = {k: v for k, v in _body(name="what matters").items() if k != "policies"}
    with TestClient(create_app(settings)) as client:
        put = client.put(f"{FEATURES}/fi-1{QUERY}", json=body)
        assert put.status_code == 200, put.text
        assert put.json()["status"] == "NotSubmitted"
        listed = client.get(f"{FEATURES}{QUERY}").json()["value"]
        assert [(f["id"], f["status"]) for f in listed] == [("fi-1", "NotSubmitted")]

        ran = cli("evaluations", "run", "-e", "default")
        assert ran.exit_code == 0, ran.output
        assert "feature importance fi-1 succeeded" in ran.output

        answer = client.get(f"{FEATURES}/fi-1{QUERY}").json()
        assert answer["status"] == "Succeeded", answer["description"]
        scores = {s["namespace"]: s for s in answer["featureScores"]}
        report = answer["report"]
        for effect in report["namespaces"]:
            for namespace in effect["namespaces"]:
                assert scores[namespace]["score"] == effect["delta"]["value"]
                assert scores[namespace]["verdict"] == effect["verdict"]
        # Best first, and the world's known answer: the user namespace carries the signal.
        values = [s["score"] for s in answer["featureScores"]]
        assert values == sorted(values, reverse=True)
        assert scores["user"]["verdict"] == "helps"
        assert scores["noise"]["verdict"] == "negligible"

        assert client.delete(f"{FEATURES}/fi-1{QUERY}").status_code == 204
        gone = _error(client.get(f"{FEATURES}/fi-1{QUERY}"), 404)
        assert gone["innerError"]["code"] == "FeatureImportanceNotFound"
        backwards = {**body, "startTime": body["endTime"], "endTime": body["startTime"]}
        bad = _error(client.put(f"{FEATURES}/fi-2{QUERY}", json=backwards), 400)
        assert "endTime" in bad["message"]
        assert bad["innerError"]["code"] == "InvalidContract"


def test_the_python_sdk_creates_reads_lists_and_deletes_evaluations(
    request: pytest.FixtureRequest,
) -> None:
    endpoint, _ = request.getfixturevalue("served")
    admin: Any = PersonalizerAdministrationClient(endpoint, AzureKeyCredential("admin-key"))
    now = datetime.now(UTC)
    body = _body()
    assert admin.create_evaluation("sdk-eval", body) is None
    got = admin.get_evaluation("sdk-eval", start_time=now - timedelta(hours=2), end_time=now)
    assert (got["id"], got["name"], got["status"]) == ("sdk-eval", body["name"], "NotSubmitted")
    assert [e["id"] for e in admin.list_evaluations()] == ["sdk-eval"]
    with pytest.raises(HttpResponseError, match="has not succeeded"):
        admin.apply_from_evaluation({"evaluationId": "sdk-eval", "policyName": "cross"})
    assert admin.delete_evaluation("sdk-eval") is None
    with pytest.raises(HttpResponseError) as missing:
        admin.get_evaluation("sdk-eval", start_time=now, end_time=now)
    assert missing.value.status_code == 404

    fi = {k: v for k, v in body.items() if k != "policies"}
    assert admin.create_feature_importance("sdk-fi", fi) is None
    assert admin.get_feature_importance("sdk-fi")["status"] == "NotSubmitted"
    assert [f["id"] for f in admin.list_feature_importances()] == ["sdk-fi"]
    assert admin.delete_feature_importance("sdk-fi") is None
    assert list(admin.list_feature_importances()) == []
