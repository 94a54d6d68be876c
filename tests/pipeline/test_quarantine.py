"""Ingest holds every line to the event contract: what breaks it is quarantined with its reason
and segment/line, counted and reported, and never reaches VW; the good lines still train."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import Result
from crafted_segments import EventLogFolder, Pipeline, at, decision, iso, reward

from cbloop_pipeline.train import TrainError, learn


def _edit(line: str, change: Callable[[dict[str, Any]], None]) -> str:
    obj = orjson.loads(line)
    change(obj)
    return orjson.dumps(obj).decode()


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = obj
        for key in parents:
            target = target[key]
        target[last] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda obj: obj.pop(key)


# event id -> (how the good line is broken, the reason ingest must give)
BAD_DECISIONS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "c-string": (_set("c", "oops"), "c must be an object"),
    "c-number": (_set("c", 42), "c must be an object"),
    "c-true": (_set("c", True), "c must be an object"),
    "c-missing": (_drop("c"), "c is missing"),
    "multi-empty": (_set("c._multi", []), "c._multi is empty"),
    "multi-not-list": (_set("c._multi", {"a": 1}), "c._multi must be a list"),
    "multi-scalars": (_set("c._multi", [1, 2, 3]), "c._multi must hold objects"),
    "chosen-beyond": (_set("a", [4, 1, 2]), "a holds a position outside c._multi (1-based)"),
    "chosen-zero": (_set("a", [0, 1, 2]), "a holds a position outside c._multi (1-based)"),
    "a-repeats": (_set("a", [1, 1, 2]), "a repeats a position"),
    "a-strings": (_set("a", ["1", "2", "3"]), "a must hold integers"),
    "p-seven": (_set("p", [0.8, 7, 0.1]), "p holds a probability outside [0, 1]"),
    "p-negative": (_set("p", [0.8, -0.5, 0.7]), "p holds a probability outside [0, 1]"),
    "p-short": (_set("p", [0.8, 0.2]), "p must hold one probability per entry of a"),
    "p-sum": (_set("p", [0.5, 0.1, 0.1]), "p does not sum to 1"),
    "event-id-number": (_set("EventId", 17), "EventId must be a string"),
    "bad-time": (_set("Timestamp", "yesterday"), "Timestamp must be an ISO-8601 time"),
    "sample-one": (_set("sample_prob", 1.0), "sample_prob must be a number in [0, 1)"),
    "experiment-number": (_set("experiment", 3), "experiment must be a non-empty string"),
    "model-id-list": (_set("model_id", ["m"]), "model_id must be a string"),
    "ids-short": (_set("action_ids", ["a0"]), "action_ids must hold one string per c._multi entry"),
}


def _bad_rewards() -> dict[str, str]:
    """line -> reason; each names a good decision so only the contract can refuse it."""
    base = orjson.loads(reward("good-0", 5, 1.0))
    cases: dict[str, tuple[dict[str, object], str]] = {
        "string": ({"value": "1"}, "a reward's value must be a number"),
        "null": ({"value": None}, "a reward's value must be a number"),
        "bool": ({"value": True}, "a reward's value must be a number"),
        "huge": (
            {"value": 1e300},
            "a reward's value must be finite and within VW's 32-bit float range",
        ),
        "kind": ({"kind": "click"}, "kind must be 'reward' or 'activate'"),
        "time": ({"Timestamp": "soon"}, "Timestamp must be an ISO-8601 time"),
        "key": ({"idempotency_key": 5}, "idempotency_key must be a string or null"),
    }
    return {orjson.dumps({**base, **patch}).decode(): reason for patch, reason in cases.values()}


def test_lines_breaking_the_contract_are_quarantined_with_reasons_and_the_rest_trains(
    wh: Pipeline, event_log: EventLogFolder, cli: Callable[..., Result]
) -> None:
    good = [decision(f"good-{i}", i, chosen=i % 3) for i in range(30)]
    bad = {
        event_id: _edit(decision(event_id, 100), change)
        for event_id, (change, _) in BAD_DECISIONS.items()
    }
    lines = [*good[:15], *bad.values(), "not json at all", *good[15:]]
    segment = event_log.decisions(*lines)
    bad_rewards = _bad_rewards()
    rewards = [reward(f"good-{i}", i + 5, float(i % 2)) for i in range(30)]
    event_log.outcomes(*rewards, *bad_rewards)

    ingested = cli("ingest")
    assert ingested.exit_code == 0, ingested.output
    n_bad = len(bad) + 1 + len(bad_rewards)
    assert f"30 decisions, 30 outcomes, {n_bad} rejected" in ingested.output

    key = segment.relative_to(wh.settings.storage.root).as_posix()
    quarantined = wh.query(
        "SELECT segment_key, line_no, reason, line FROM quarantined_lines "
        "WHERE kind = 'decisions' ORDER BY line_no"
    )
    expected = [
        (key, 16 + i, reason, bad[eid])
        for i, (eid, (_, reason)) in enumerate(BAD_DECISIONS.items())
    ]
    expected.append((key, 16 + len(bad), "not valid JSON", "not json at all"))
    assert quarantined == expected
    outcome_reasons = wh.query(
        "SELECT line, reason FROM quarantined_lines WHERE kind = 'outcomes' ORDER BY line_no"
    )
    assert dict(outcome_reasons) == bad_rewards
    # Nothing of a quarantined line is left where the join looks.
    assert wh.query("SELECT count(*) FROM decisions WHERE event_id NOT LIKE 'good-%'") == [(0,)]
    assert wh.query("SELECT count(*), sum(value) FROM outcomes") == [(30, 15.0)]

    report = cli("report", "--by", "experiment")
    assert report.exit_code == 0, report.output
    assert f"quarantined lines: {n_bad}" in report.output

    joined = cli("join", "--as-of", iso(at(3600)))
    assert joined.exit_code == 0, joined.output
    assert "30 joined" in joined.output
    trained = cli("train")
    assert trained.exit_code == 0, trained.output
    assert "events learned:    30" in trained.output


def test_a_vw_crash_in_training_is_a_training_error_not_the_end_of_the_process(
    wh: Pipeline, tmp_path: Path
) -> None:
    """The line that crashed VW in-process (a `c` that is a string), written straight into a
    joined file past ingest: training runs VW in a child, so the crash is reported."""
    line = _edit(decision("boom", 0), _set("c", "oops"))
    data = tmp_path / "poison.dsjson"
    labelled = '{"_label_cost":-1.0,"_label_probability":0.8,"_label_Action":1,"_labelIndex":0,'
    data.write_text(labelled + line[1:] + "\n", encoding="utf-8")
    vw_args = wh.settings.experiment("default").vw_arguments()
    with pytest.raises(TrainError) as caught:
        learn(vw_args, data, tmp_path / "out.vw")
    assert "VW" in str(caught.value)
    # The calling process is alive and can still train on good data.
    good = tmp_path / "good.dsjson"
    good.write_text(labelled + decision("fine", 0)[1:] + "\n", encoding="utf-8")
    stats = learn(vw_args, good, tmp_path / "good.vw")
    assert stats.examples == 1
