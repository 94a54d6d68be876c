"""Personalizer evaluation requests run by the pipeline: cbloop's OPE figures for a time range."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from tuning_world import EXPERIMENT, UNIFORM_VALUE, World, log_and_join

from cbloop.clock import format_ts, parse_ts
from cbloop.evaluation_requests import (
    FEATURE_IMPORTANCES,
    EvaluationRequest,
    PolicySpec,
    pending_requests,
    read_result,
    write_request,
)
from cbloop.settings import Settings
from cbloop.storage import open_store
from cbloop_pipeline.join_catalog import finished_joins
from cbloop_pipeline.learning import evaluate_command, train_command
from cbloop_pipeline.personalizer_evaluations import ONLINE_POLICY, run_pending
from cbloop_pipeline.personalizer_feature_importances import run_pending_importances
from cbloop_pipeline.tuning.features import evaluate_features
from cbloop_pipeline.tuning.runs import estimate_dict, prepared, train_and_score
from cbloop_pipeline.warehouse import connect

CROSS = PolicySpec("cross", "--cb_explore_adf -q ui -b 18", "-q ui -b 18", {"type": "squarecb"})


def _world(make_settings: Callable[..., Settings], **experiment: object) -> World:
    settings = make_settings(experiments={"default": {**EXPERIMENT, **experiment}})
    log_and_join(settings, 1500, seed=11)
    con = connect(settings.warehouse)
    try:
        joins = finished_joins(con, "default")
    finally:
        con.close()
    return World(settings, open_store(settings.storage), joins)


@pytest.fixture
def world(make_settings: Callable[..., Settings]) -> World:
    """The tuning world with settings that lack the user x item cross."""
    return _world(make_settings)


@pytest.fixture
def crossed_world(make_settings: Callable[..., Settings]) -> World:
    """The same world with settings that have the cross (`-q ui`)."""
    return _world(make_settings, vw_args="-q ui -b 18")


def _request(
    evaluation_id: str, start: datetime, end: datetime, *policies: PolicySpec
) -> EvaluationRequest:
    return EvaluationRequest(
        id=evaluation_id,
        experiment="default",
        name=f"eval {evaluation_id}",
        start=start,
        end=end,
        policies=policies,
        created_at=format_ts(),
    )


def _run(world: World, request: EvaluationRequest) -> dict[str, object]:
    write_request(world.store, request)
    done = run_pending(world.store, "default", world.experiment, world.joins)
    assert [d[0] for d in done] == [request.id]
    result = read_result(world.store, "default", request.id)
    assert result is not None
    return result


def _eval_times(world: World) -> list[datetime]:
    times = []
    for join in world.joins:
        for line in world.store.get_bytes(join.eval_key).splitlines():
            if line.strip():
                times.append(parse_ts(orjson.loads(line)["Timestamp"]))
    return times


def test_an_evaluation_over_all_the_data_equals_the_search_code(world: World) -> None:
    now = datetime.now(UTC)
    result = _run(world, _request("all", now - timedelta(hours=2), now, CROSS))
    assert result["status"] == "succeeded", result["error"]
    policies = {p["name"]: p for p in result["policies"]}  # type: ignore[attr-defined]
    assert list(policies) == [ONLINE_POLICY, "cross"]

    # The same figures straight from the code `cbloop search` scores candidates with.
    with prepared(
        world.store,
        world.joins,
        world.experiment.vw_arguments(),
        folds=2,
        seed=0,
        confidence=0.95,
    ) as data:
        for name, settings in (
            (ONLINE_POLICY, world.experiment),
            ("cross", CROSS.settings(world.experiment)),
        ):
            direct = train_and_score(data, settings.vw_arguments(), name)
            expected = {k: estimate_dict(v) for k, v in direct.result.estimates.items()}
            assert policies[name]["estimates"] == expected
            assert policies[name]["vw_arguments"] == settings.vw_arguments()
            fb = direct.result.feedback()
            sums = policies[name]["sums"]
            assert sums["events"] == data.eval_events == result["eval_events"]
            assert sums["ips_numerator"] == pytest.approx(
                expected["ips"]["raw_value"] * fb.n, rel=1e-12
            )
        assert result["logging_policy"] == estimate_dict(direct.result.logging_policy)

    # The known answer: only the user x item cross finds the good action.
    online = policies[ONLINE_POLICY]["estimates"]["dr"]["value"]
    cross = policies["cross"]["estimates"]["dr"]["value"]
    assert cross > online + 0.1
    assert cross > UNIFORM_VALUE + 0.2
    assert pending_requests(world.store, "default") == []


def test_the_time_range_cuts_the_decisions(world: World) -> None:
    times = sorted(_eval_times(world))
    middle = times[len(times) // 2]
    result = _run(world, _request("half", times[0] - timedelta(seconds=1), middle))
    assert result["status"] == "succeeded", result["error"]
    expected = sum(1 for t in times if t <= middle)
    assert result["eval_events"] == expected < len(times)
    online = result["policies"][0]  # type: ignore[index]
    assert online["estimates"]["ips"]["n"] == expected


def test_a_range_without_logs_fails_naming_it_and_is_not_run_again(world: World) -> None:
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    result = _run(world, _request("old", long_ago, long_ago + timedelta(days=1)))
    assert result["status"] == "failed"
    assert "no joined eval-split decision between 2020-01-01" in str(result["error"])
    assert run_pending(world.store, "default", world.experiment, world.joins) == []


def test_a_policy_the_whitelist_refuses_fails_the_evaluation(world: World) -> None:
    now = datetime.now(UTC)
    bad = PolicySpec("bad", "--data /etc/passwd", "--data /etc/passwd", {"type": "squarecb"})
    result = _run(world, _request("bad", now - timedelta(hours=2), now, bad))
    assert result["status"] == "failed"
    assert "policy 'bad'" in str(result["error"])
    assert "--data" in str(result["error"])


def test_a_feature_importance_over_all_the_data_equals_cbloop_features(
    crossed_world: World,
) -> None:
    world = crossed_world
    now = datetime.now(UTC)
    request = _request("fi", now - timedelta(hours=2), now)
    write_request(world.store, request, FEATURE_IMPORTANCES)
    done = run_pending_importances(world.store, "default", world.experiment, world.joins)
    assert done == [("fi", "succeeded")]
    result = read_result(world.store, "default", "fi", FEATURE_IMPORTANCES)
    assert result is not None
    report = result["report"]

    direct = evaluate_features(world.store, "default", world.experiment, world.joins).to_dict()
    assert report["namespaces"] == direct["namespaces"]
    assert report["full"] == direct["full"]
    verdicts = {ns: e["verdict"] for e in report["namespaces"] for ns in e["namespaces"]}
    assert verdicts["user"] == "helps"
    assert verdicts["noise"] == "negligible"
    # The range's input was only lent to the store for the run.
    leftovers = [i.key for i in world.store.list("personalizer/") if "/input/" in i.key]
    assert leftovers == []


def test_the_online_policy_figures_equal_cbloop_evaluate(world: World) -> None:
    trained = train_command(world.settings, "default", fresh=True)
    assert trained.model is not None
    record = evaluate_command(world.settings, "default", model_id=trained.model.model_id)
    now = datetime.now(UTC)
    result = _run(world, _request("vs-evaluate", now - timedelta(hours=2), now))
    online = result["policies"][0]  # type: ignore[index]
    assert online["name"] == ONLINE_POLICY
    assert online["estimates"] == record["policies"]["candidate"]["estimates"]
    assert result["logging_policy"] == record["policies"]["logging"]["estimates"]["logging"]
