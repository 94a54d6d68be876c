"""Learning modes and the control holdout through POST /v1/rank (real app lifespan, real log).

logging_only serves the app's own choice with probability 1; apprentice serves it with
1 - epsilon and explores with epsilon, with exact logged propensities; the holdout is a stable
function of the unit; bad input is refused naming the field, and nothing is logged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_helpers import ClientFactory, app_settings, logged, rank_body

from cbloop.settings import SettingsError

ReadLog = Callable[[str], list[dict[str, Any]]]


def _experiment(**fields: Any) -> dict[str, Any]:
    return {"experiments": {"default": fields}}


def _log(client: TestClient) -> list[dict[str, Any]]:
    return logged(app_settings(client).storage.root, "decisions")


def _logged_pmf(line: dict[str, Any]) -> dict[str, float]:
    """action id -> logged probability, from the decision line's a/p arrays."""
    ids = line["action_ids"]
    return {ids[a - 1]: p for a, p in zip(line["a"], line["p"], strict=True)}


def _binomial_bounds(n: int, p: float, sds: float = 4.5) -> tuple[float, float]:
    sd = math.sqrt(n * p * (1 - p))
    return n * p - sds * sd, n * p + sds * sd


def test_logging_only_serves_the_baseline_with_probability_one_and_logs_it(
    make_client: ClientFactory,
) -> None:
    client = make_client(**_experiment(mode="logging_only"))
    answers = [
        client.post(
            "/v1/rank", json=rank_body(event_id=f"e{i}", baseline_action=f"a{i % 4}")
        ).json()
        for i in range(60)
    ]
    assert [a["action_id"] for a in answers] == [f"a{i % 4}" for i in range(60)]
    assert {a["probability"] for a in answers} == {1.0}
    assert {(a["mode"], a["holdout"]) for a in answers} == {("logging_only", False)}
    lines = _log(client)
    assert len(lines) == 60
    for i, line in enumerate(sorted(lines, key=lambda x: int(x["EventId"][1:]))):
        assert line["mode"] == "logging_only" and line["holdout"] is False
        assert line["baseline_action"] == f"a{i % 4}"
        assert _logged_pmf(line) == {f"a{k}": 1.0 if k == i % 4 else 0.0 for k in range(4)}
    # Without a baseline the app's choice is the first eligible action.
    first = client.post("/v1/rank", json=rank_body(excluded_actions=["a0"])).json()
    assert (first["action_id"], first["probability"]) == ("a1", 1.0)


def test_logging_only_ignores_a_configured_holdout_so_users_see_no_change(
    make_client: ClientFactory,
) -> None:
    client = make_client(**_experiment(mode="logging_only", holdout={"share": 0.5}))
    answers = [
        client.post("/v1/rank", json=rank_body(baseline_action="a3")).json() for _ in range(40)
    ]
    assert {(a["action_id"], a["probability"], a["holdout"]) for a in answers} == {
        ("a3", 1.0, False)
    }


def test_apprentice_serves_the_baseline_with_one_minus_epsilon_and_logs_exact_propensities(
    make_client: ClientFactory,
) -> None:
    epsilon, k, n = 0.2, 4, 1000
    client = make_client(**_experiment(mode="apprentice", apprentice={"epsilon": epsilon}))
    expected = {f"a{j}": epsilon / k for j in range(k)}
    expected["a2"] = 1 - epsilon + epsilon / k
    baseline_picks = 0
    for i in range(n):
        answer = client.post(
            "/v1/rank", json=rank_body(event_id=f"ap-{i}", baseline_action="a2")
        ).json()
        assert answer["mode"] == "apprentice" and answer["holdout"] is False
        ranked = {r["id"]: r["probability"] for r in answer["ranking"]}
        assert ranked == pytest.approx(expected, abs=1e-15)
        assert math.fsum(ranked.values()) == pytest.approx(1.0, abs=1e-15)
        assert answer["probability"] == ranked[answer["action_id"]]
        baseline_picks += answer["action_id"] == "a2"
    low, high = _binomial_bounds(n, expected["a2"])
    assert low <= baseline_picks <= high
    for line in _log(client):
        assert line["mode"] == "apprentice"
        assert _logged_pmf(line) == pytest.approx(expected, abs=1e-15)


def test_apprentice_with_epsilon_zero_always_serves_the_baseline(
    make_client: ClientFactory,
) -> None:
    client = make_client(**_experiment(mode="apprentice", apprentice={"epsilon": 0}))
    answers = [
        client.post("/v1/rank", json=rank_body(baseline_action="a1")).json() for _ in range(30)
    ]
    assert {(a["action_id"], a["probability"]) for a in answers} == {("a1", 1.0)}


def test_online_without_holdout_answers_online_with_the_event_id_as_unit(
    client: TestClient, read_log: ReadLog
) -> None:
    answer = client.post("/v1/rank", json=rank_body(event_id="plain-1")).json()
    assert (answer["mode"], answer["holdout"], answer["unit_id"]) == ("online", False, "plain-1")
    [line] = read_log("decisions")
    assert (line["mode"], line["holdout"], line["unit_id"], line["holdout_share"]) == (
        "online",
        False,
        "plain-1",
        0.0,
    )
    named = client.post("/v1/rank", json=rank_body(unit_id="user-9")).json()
    assert named["unit_id"] == "user-9"


def test_holdout_is_stable_per_unit_and_its_share_is_within_binomial_bounds(
    make_client: ClientFactory,
) -> None:
    share, units, visits = 0.2, 300, 4
    client = make_client(**_experiment(holdout={"share": share, "policy": "uniform"}))
    by_unit: dict[str, set[bool]] = {}
    for u in range(units):
        for v in range(visits):
            answer = client.post(
                "/v1/rank", json=rank_body(event_id=f"u{u}-v{v}", unit_id=f"user-{u}")
            ).json()
            assert answer["unit_id"] == f"user-{u}"
            by_unit.setdefault(answer["unit_id"], set()).add(answer["holdout"])
            if answer["holdout"]:
                assert {r["probability"] for r in answer["ranking"]} == {0.25}
    assert all(len(flags) == 1 for flags in by_unit.values())
    held = sum(flags == {True} for flags in by_unit.values())
    low, high = _binomial_bounds(units, share)
    assert low <= held <= high
    lines = _log(client)
    assert len(lines) == units * visits
    for line in lines:
        assert line["holdout_share"] == share
        if line["holdout"]:
            assert set(_logged_pmf(line).values()) == {0.25}


def test_holdout_units_are_the_same_across_workers_restarts_and_event_ids(
    make_client: ClientFactory,
) -> None:
    """The assignment is a hash of (experiment, unit): a second app agrees with the first."""
    settings = _experiment(holdout={"share": 0.3})
    first = make_client(**settings)
    second = make_client(**settings)
    flags = [
        (
            first.post("/v1/rank", json=rank_body(unit_id=f"user-{u}")).json()["holdout"],
            second.post("/v1/rank", json=rank_body(unit_id=f"user-{u}")).json()["holdout"],
        )
        for u in range(100)
    ]
    assert all(a == b for a, b in flags)
    assert any(a for a, _ in flags) and not all(a for a, _ in flags)


def test_a_baseline_holdout_serves_the_baseline_with_probability_one(
    make_client: ClientFactory,
) -> None:
    client = make_client(**_experiment(holdout={"share": 0.5, "policy": "baseline"}))
    answers = [
        client.post("/v1/rank", json=rank_body(unit_id=f"user-{u}", baseline_action="a3")).json()
        for u in range(80)
    ]
    held = [a for a in answers if a["holdout"]]
    assert held and len(held) < len(answers)
    assert {(a["action_id"], a["probability"]) for a in held} == {("a3", 1.0)}


@pytest.mark.parametrize(
    ("extra", "field", "words"),
    [
        ({"baseline_action": "zzz"}, "baseline_action", "not one of the actions"),
        (
            {"baseline_action": "a1", "excluded_actions": ["a1"]},
            "baseline_action",
            "excluded",
        ),
        ({"baseline_action": ""}, "baseline_action", ""),
        ({"unit_id": "has space"}, "unit_id", ""),
        ({"unit_id": "x" * 300}, "unit_id", ""),
    ],
)
@pytest.mark.parametrize("mode", ["online", "apprentice", "logging_only"])
def test_a_bad_baseline_action_or_unit_id_is_refused_naming_the_field_and_logs_nothing(
    make_client: ClientFactory, mode: str, extra: dict[str, Any], field: str, words: str
) -> None:
    client = make_client(**_experiment(mode=mode, holdout={"share": 0.1}))
    response = client.post("/v1/rank", json=rank_body(**extra))
    assert response.status_code == 422, response.text
    body = response.json()
    assert [e["field"] for e in body["errors"]] == [field]
    assert field in body["detail"] and words in body["detail"]
    assert _log(client) == []


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"mode": "greedy"}, "experiments.default.mode"),
        ({"holdout": {"share": 0.6}}, "experiments.default.holdout.share"),
        ({"holdout": {"share": -0.1}}, "experiments.default.holdout.share"),
        ({"holdout": {"policy": "best"}}, "experiments.default.holdout.policy"),
        ({"apprentice": {"epsilon": 1.5}}, "experiments.default.apprentice.epsilon"),
        ({"apprentice": {"epsilon": -0.01}}, "experiments.default.apprentice.epsilon"),
    ],
)
def test_bad_mode_settings_stop_the_service_naming_the_key(
    make_client: ClientFactory, fields: dict[str, Any], key: str
) -> None:
    with pytest.raises(SettingsError, match=key.replace(".", r"\.")):
        make_client(**_experiment(**fields))


def test_the_openapi_schema_documents_the_new_request_and_answer_fields(
    client: TestClient,
) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    request = schemas["RankRequest"]["properties"]
    assert "baseline_action" in request and "description" in request["baseline_action"]
    assert "unit_id" in request and "description" in request["unit_id"]
    answer = schemas["RankResponse"]["properties"]
    assert {"mode", "holdout", "unit_id"} <= set(answer)
    assert set(schemas["RankResponse"]["required"]) >= {"mode", "holdout", "unit_id"}


ADMIN_KEY = "admin-key-modes"
ADMIN = {"X-API-Key": ADMIN_KEY}
ADMIN_BASE = "/v1/admin/experiments"


@pytest.fixture
def admin(make_client: ClientFactory) -> TestClient:
    return make_client(service={"admin_api_keys": [ADMIN_KEY], "model_poll_seconds": 0.1})


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"mode": "greedy"}, "mode"),
        ({"holdout": {"share": 0.51}}, "holdout.share"),
        ({"holdout": {"share": -0.1}}, "holdout.share"),
        ({"holdout": {"policy": "best"}}, "holdout.policy"),
        ({"apprentice": {"epsilon": 1.2}}, "apprentice.epsilon"),
        ({"apprentice": {"epsilon": -1}}, "apprentice.epsilon"),
    ],
)
def test_a_bad_mode_share_or_epsilon_over_the_admin_api_is_a_422_naming_it_and_changes_nothing(
    admin: TestClient, settings: dict[str, Any], field: str
) -> None:
    bad = admin.patch(
        f"{ADMIN_BASE}/default", json={"settings": settings, "why": "try it"}, headers=ADMIN
    )
    assert bad.status_code == 422, bad.text
    assert [e["field"] for e in bad.json()["errors"]] == [field]
    history = admin.get(f"{ADMIN_BASE}/default/history", headers=ADMIN).json()["versions"]
    assert len(history) == 1
    answer = admin.post("/v1/rank", json=rank_body()).json()
    assert (answer["mode"], answer["holdout"]) == ("online", False)
    assert [line["mode"] for line in _log(admin)] == ["online"]


def test_a_mode_changed_over_the_admin_api_is_served_at_once(admin: TestClient) -> None:
    changed = admin.patch(
        f"{ADMIN_BASE}/default",
        json={"settings": {"mode": "logging_only"}, "why": "watch first"},
        headers=ADMIN,
    )
    assert changed.status_code == 200, changed.text
    answer = admin.post("/v1/rank", json=rank_body(baseline_action="a2")).json()
    assert (answer["mode"], answer["action_id"], answer["probability"]) == (
        "logging_only",
        "a2",
        1.0,
    )
