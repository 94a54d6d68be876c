"""`cbloop decide`: batch decisions through the CLI, held equal to /v1/rank, learned from."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
from click.testing import Result
from fastapi.testclient import TestClient
from service_helpers import ClientFactory, logged, publish_model, rank_body, train_model

from cbloop import clock
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings
from cbloop.storage import open_store


def _write_lines(path: Path, bodies: list[Any]) -> Path:
    path.write_bytes(
        b"".join((b if isinstance(b, bytes) else orjson.dumps(b)) + b"\n" for b in bodies)
    )
    return path


def _answers(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _varied_bodies(n: int, *, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    bodies = []
    for i in range(n):
        body = rank_body(n_actions=rng.randint(2, 6), event_id=f"evt-{seed}-{i}")
        body["context"]["user"]["age"] = rng.randint(18, 80)
        if rng.random() < 0.3:
            body["excluded_actions"] = ["a0"]
        bodies.append(body)
    return bodies


def test_batch_and_online_give_the_same_answers_and_decision_lines(
    make_client: ClientFactory, cli: Callable[..., Result], tmp_path: Path
) -> None:
    client = make_client()
    settings: Settings = client.app.state.service.settings  # type: ignore[attr-defined]
    model_id = publish_model(settings, train_model(settings, favour=2))
    client.__exit__(None, None, None)  # restart so the skewed model serves from the start
    client = make_client()
    bodies = _varied_bodies(60, seed=3)
    online = [client.post("/v1/rank", json=body) for body in bodies]
    assert all(r.status_code == 200 for r in online), [r.text for r in online][:3]
    client.__exit__(None, None, None)  # closes the segments
    online_lines = {line["EventId"]: line for line in logged(settings.storage.root, "decisions")}

    source = _write_lines(tmp_path / "requests.jsonl", bodies)
    out = tmp_path / "answers.jsonl"
    result = cli("decide", str(source), "--out", str(out), "--workers", "2")

    assert result.exit_code == 0, result.output
    batch = _answers(out)
    assert batch == [r.json() for r in online]
    assert {a["model_id"] for a in batch} == {model_id}
    assert len({a["action_id"] for a in batch}) > 1  # a real pmf was sampled, not one action
    # Each event now has two decision lines, the online one and the batch one: equal but
    # for the time they were written.
    both: dict[str, list[dict[str, Any]]] = {}
    for line in logged(settings.storage.root, "decisions"):
        both.setdefault(line["EventId"], []).append(line)
    assert set(both) == set(online_lines)
    for pair in both.values():
        assert len(pair) == 2
        first, second = ({k: v for k, v in line.items() if k != "Timestamp"} for line in pair)
        assert first == second


def test_lines_without_event_id_get_ids_from_the_file_so_a_rerun_chooses_the_same(
    make_settings: Callable[..., Settings], cli: Callable[..., Result], tmp_path: Path
) -> None:
    settings = make_settings()
    ModelRegistry(open_store(settings.storage)).ensure_initial_model(
        "default", settings.experiment("default")
    )
    source = _write_lines(tmp_path / "campaign.jsonl", [rank_body(5) for _ in range(300)])
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"

    assert cli("decide", str(source), "--out", str(first), "--no-log").exit_code == 0
    assert cli("decide", str(source), "--out", str(second), "--no-log").exit_code == 0

    a, b = _answers(first), _answers(second)
    assert a == b
    ids = [x["event_id"] for x in a]
    assert len(set(ids)) == 300  # one id per line, all distinct
    assert len({x["action_id"] for x in a}) > 1  # ids differ, so the seeded draws differ
    assert not logged(settings.storage.root, "decisions")  # --no-log logged nothing

    other = _write_lines(tmp_path / "other.jsonl", [rank_body(5) for _ in range(301)])
    third = tmp_path / "third.jsonl"
    assert cli("decide", str(other), "--out", str(third), "--no-log").exit_code == 0
    assert not set(ids) & {x["event_id"] for x in _answers(third)}


def test_bad_lines_are_reported_by_number_counted_skipped_and_never_logged(
    make_settings: Callable[..., Settings], cli: Callable[..., Result], tmp_path: Path
) -> None:
    settings = make_settings(experiments={"default": {}, "other": {}})
    registry = ModelRegistry(open_store(settings.storage))
    for name in ("default", "other"):
        registry.ensure_initial_model(name, settings.experiment(name))
    good = rank_body(3)
    lines: list[Any] = [
        {**good, "event_id": "ok-1"},
        b"{not json",
        {**good, "actions": []},
        {**good, "excluded_actions": ["a0", "a1", "a2"]},
        {**good, "experiment": "other"},
        {**good, "context": {"user": {"age": [1, 2]}}},
        {**good, "event_id": "ok-2"},
    ]
    source = _write_lines(tmp_path / "mixed.jsonl", lines)
    out = tmp_path / "answers.jsonl"

    result = cli("decide", str(source), "--out", str(out), "--workers", "1")

    assert result.exit_code == 1
    assert [a["event_id"] for a in _answers(out)] == ["ok-1", "ok-2"]
    text = result.output
    for number, words in [
        (2, "not valid JSON"),
        (3, "actions"),
        (4, "excluded"),
        (5, "experiment"),
        (6, "context.user.age"),
    ]:
        reported = next(line for line in text.splitlines() if line.startswith(f"line {number}:"))
        assert words in reported, reported
    assert "2 decided" in text and "5 bad lines skipped" in text
    assert sorted(d["EventId"] for d in logged(settings.storage.root, "decisions")) == [
        "ok-1",
        "ok-2",
    ]


def test_an_unknown_experiment_or_model_is_one_error_line(
    make_settings: Callable[..., Settings], cli: Callable[..., Result], tmp_path: Path
) -> None:
    settings = make_settings()
    ModelRegistry(open_store(settings.storage)).ensure_initial_model(
        "default", settings.experiment("default")
    )
    source = _write_lines(tmp_path / "r.jsonl", [rank_body(3)])

    unknown = cli("decide", str(source), "-e", "nope", "--no-log")
    missing = cli("decide", str(source), "--model", "m-does-not-exist", "--no-log")

    assert unknown.exit_code == 1 and "'nope' is not configured" in unknown.output
    assert missing.exit_code == 1 and "m-does-not-exist" in missing.output
    assert "Traceback" not in unknown.output + missing.output


def test_a_parquet_file_gets_the_same_answers_as_the_same_requests_in_json_lines(
    make_settings: Callable[..., Settings], cli: Callable[..., Result], tmp_path: Path
) -> None:
    settings = make_settings()
    ModelRegistry(open_store(settings.storage)).ensure_initial_model(
        "default", settings.experiment("default")
    )
    bodies = _varied_bodies(40, seed=5)
    for i, body in enumerate(bodies):  # rows with keys the others lack: nulls in Parquet
        if i % 3 == 0:
            body["context"]["device"] = {"os": "ios"}
        if i % 4 == 0:
            del body["actions"][0]["features"]["item"]["len"]
    source = _write_lines(tmp_path / "requests.jsonl", bodies)
    parquet = tmp_path / "requests.parquet"
    with duckdb.connect() as con:  # as a data team would: the JSON lines, typed by DuckDB
        con.execute(
            f"COPY (SELECT * FROM read_json_auto('{source}')) TO '{parquet}' (FORMAT PARQUET)"
        )
    from_json, from_parquet = tmp_path / "a.jsonl", tmp_path / "b.jsonl"

    assert cli("decide", str(source), "--out", str(from_json), "--no-log").exit_code == 0
    result = cli("decide", str(parquet), "--out", str(from_parquet), "--no-log")

    assert result.exit_code == 0, result.output
    assert _answers(from_parquet) == _answers(from_json)
    assert "40 decided" in result.output


def test_a_file_named_parquet_that_is_not_is_one_error_line(
    make_settings: Callable[..., Settings], cli: Callable[..., Result], tmp_path: Path
) -> None:
    make_settings()
    bogus = tmp_path / "requests.parquet"
    bogus.write_bytes(b'{"context": {}}\n')

    result = cli("decide", str(bogus), "--no-log")

    assert result.exit_code == 2
    assert "not a readable Parquet file" in result.output
    assert "Traceback" not in result.output


# -- a campaign in a seeded world -------------------------------------------------------------
SEGMENTS = ["north", "south", "east", "west"]
ITEMS = [f"offer-{k}" for k in range(4)]


def _click_probability(segment: str, item: str) -> float:
    """The world: each segment has one offer it likes (0.8), the rest are poor (0.1)."""
    return 0.8 if ITEMS.index(item) == SEGMENTS.index(segment) else 0.1


def _campaign(n: int, *, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "context": {"user": {"segment": rng.choice(SEGMENTS)}},
            "actions": [{"id": item, "features": {"offer": {"name": item}}} for item in ITEMS],
        }
        for _ in range(n)
    ]


def _expected_reward(requests: list[dict[str, Any]], answers: list[dict[str, Any]]) -> float:
    """The policy's true value on these contexts: its pmf against the click probabilities."""
    total = 0.0
    for request, answer in zip(requests, answers, strict=True):
        segment = request["context"]["user"]["segment"]
        total += sum(
            r["probability"] * _click_probability(segment, r["id"]) for r in answer["ranking"]
        )
    return total / len(requests)


def test_a_batch_campaign_rewarded_over_http_is_joined_trained_on_and_improves_the_policy(
    make_client: ClientFactory, cli: Callable[..., Result], tmp_path: Path
) -> None:
    overrides = {
        "experiments": {
            "default": {
                "vw_args": "--interactions :A -b 18",
                "reward": {"wait_seconds": 60, "backward_seconds": 60},
                "promotion": {"estimator": "ips", "min_events": 50, "margin": 0.0},
            }
        }
    }
    client: TestClient = make_client(**overrides)
    settings: Settings = client.app.state.service.settings  # type: ignore[attr-defined]
    registry = ModelRegistry(open_store(settings.storage))
    first_model = registry.current("default")
    assert first_model is not None

    campaign = _campaign(2000, seed=11)
    source = _write_lines(tmp_path / "campaign.jsonl", campaign)
    sent = tmp_path / "sent.jsonl"
    assert cli("decide", str(source), "--out", str(sent)).exit_code == 0
    answers = _answers(sent)
    rng = random.Random(5)
    for request, answer in zip(campaign, answers, strict=True):
        p = _click_probability(request["context"]["user"]["segment"], answer["action_id"])
        reward = 1.0 if rng.random() < p else 0.0
        r = client.post(f"/v1/events/{answer['event_id']}/reward", json={"value": reward})
        assert r.status_code == 202
    client.__exit__(None, None, None)  # closes the outcome segments
    # The join runs as of the end of the reward window (rather than the test waiting it out);
    # the loop then trains on that join, evaluates and deploys.
    window_end = (clock.now() + timedelta(seconds=61)).isoformat()
    joined = cli("join", "-e", "default", "--as-of", window_end)
    assert joined.exit_code == 0, joined.output
    loop = cli("loop", "--once", "-e", "default")
    assert loop.exit_code == 0, loop.output
    current = registry.current("default")
    assert current is not None and current.model_id != first_model.model_id, loop.output

    holdout = _campaign(1000, seed=12)
    after = tmp_path / "after.jsonl"
    source2 = _write_lines(tmp_path / "next.jsonl", holdout)
    assert cli("decide", str(source2), "--out", str(after), "--no-log").exit_code == 0
    before = tmp_path / "before.jsonl"
    assert (
        cli(
            "decide",
            str(source2),
            "--out",
            str(before),
            "--no-log",
            "--model",
            first_model.model_id,
        ).exit_code
        == 0
    )
    learned = _expected_reward(holdout, _answers(after))
    untrained = _expected_reward(holdout, _answers(before))
    # Uniform play earns (0.8 + 3 * 0.1) / 4 = 0.275; always the liked offer earns 0.8.
    assert untrained < 0.35
    assert learned > 0.6
