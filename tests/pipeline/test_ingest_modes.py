"""Ingest stores how each decision was served (mode, holdout, unit, share, baseline) and
quarantines lines whose mode or holdout keys break the contract."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from crafted_segments import EventLogFolder, Pipeline, decision


def _with(line: str, **keys: Any) -> str:
    return orjson.dumps({**orjson.loads(line), **keys}).decode()


def test_mode_holdout_unit_share_and_baseline_position_are_stored(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    event_log.decisions(
        _with(
            decision("held", 0),
            mode="apprentice",
            holdout=True,
            unit_id="user-7",
            holdout_share=0.1,
            baseline_action="a2",
        ),
        decision("old-line", 1),  # logged before these keys existed
    )
    wh.ingest()
    assert wh.query(
        "SELECT event_id, mode, holdout, unit_id, holdout_share, baseline_action "
        "FROM decisions ORDER BY event_id"
    ) == [
        ("held", "apprentice", True, "user-7", 0.1, 3),
        ("old-line", "online", False, "old-line", 0.0, 1),
    ]


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        ({"mode": "greedy"}, "mode must be online, apprentice or logging_only"),
        ({"mode": 3}, "mode must be online, apprentice or logging_only"),
        ({"holdout": "yes"}, "holdout must be true or false"),
        ({"unit_id": 12}, "unit_id must be a string"),
        ({"holdout_share": 0.7}, "holdout_share must be a number in [0, 0.5]"),
        ({"holdout_share": "0.1"}, "holdout_share must be a number in [0, 0.5]"),
        ({"baseline_action": "nope"}, "baseline_action must be one of action_ids"),
        ({"baseline_action": 1}, "baseline_action must be one of action_ids"),
    ],
)
def test_a_bad_mode_or_holdout_key_is_quarantined_with_its_reason(
    wh: Pipeline, event_log: EventLogFolder, keys: dict[str, Any], reason: str
) -> None:
    event_log.decisions(decision("good", 0), _with(decision("bad", 1), **keys))
    wh.ingest()
    assert wh.query("SELECT event_id FROM decisions") == [("good",)]
    assert wh.query("SELECT reason FROM quarantined_lines") == [(reason,)]
