from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cbloop_pipeline.ope.logged import InvalidLoggedEvent, read_logged_events

WriteLines = Callable[[list[dict[str, Any] | bytes]], Path]


def test_reads_reward_propensity_and_zero_based_action(
    line_dict: dict[str, Any], write_lines: WriteLines
) -> None:
    second = {**line_dict, "EventId": "ev-2", "_label_cost": 0.0}
    path = write_lines([line_dict, second])

    logged = read_logged_events(path)

    assert list(logged.event_id) == ["ev-1", "ev-2"]
    np.testing.assert_array_equal(logged.reward, [1.0, 0.0])
    assert not np.signbit(logged.reward[1])  # cost 0.0 is reward +0.0
    np.testing.assert_array_equal(logged.logged_probability, [0.5, 0.5])
    np.testing.assert_array_equal(logged.logged_action, [1, 1])
    np.testing.assert_array_equal(logged.n_actions, [3, 3])
    np.testing.assert_array_equal(logged.offsets, [0, 3, 6])


def test_blank_lines_are_skipped(line_dict: dict[str, Any], write_lines: WriteLines) -> None:
    path = write_lines([b"\n", line_dict, b"   \n", {**line_dict, "EventId": "ev-2"}])

    assert read_logged_events(path).n == 2


def test_empty_file_gives_no_events(write_lines: WriteLines) -> None:
    logged = read_logged_events(write_lines([]))

    assert logged.n == 0
    np.testing.assert_array_equal(logged.offsets, [0])


def test_label_after_c_is_refused_because_vw_would_ignore_it(
    line_dict: dict[str, Any], write_lines: WriteLines
) -> None:
    cost = line_dict.pop("_label_cost")
    line_dict["_label_cost"] = cost  # now after "c"

    with pytest.raises(InvalidLoggedEvent) as err:
        read_logged_events(write_lines([line_dict]))

    assert err.value.field == "_label_cost"
    assert err.value.line == 1


def test_label_index_must_point_at_the_logged_action(
    line_dict: dict[str, Any], write_lines: WriteLines
) -> None:
    # VW puts the cost on _multi[_labelIndex]; 0 here would train on the wrong action.
    line_dict["_labelIndex"] = 0

    with pytest.raises(InvalidLoggedEvent) as err:
        read_logged_events(write_lines([line_dict]))

    assert err.value.field == "_labelIndex"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("_label_probability", 0.0),
        ("_label_probability", 1.2),
        ("_label_probability", "0.5"),
        ("_label_cost", None),
        ("_label_cost", True),
        ("_label_Action", 4),
        ("_label_Action", 0),
        ("_label_Action", 1.5),
        ("EventId", ""),
        ("EventId", 7),
    ],
)
def test_invalid_fields_are_named(
    line_dict: dict[str, Any], write_lines: WriteLines, field: str, value: object
) -> None:
    line_dict[field] = value
    if field == "_label_Action" and isinstance(value, int) and 1 <= value <= 3:
        line_dict["_labelIndex"] = value - 1
    good = {**line_dict, "_label_cost": -1.0, "_label_probability": 0.5}
    good.update({"_label_Action": 2, "_labelIndex": 1, "EventId": "ok"})
    path = write_lines([good, line_dict])

    with pytest.raises(InvalidLoggedEvent) as err:
        read_logged_events(path)

    assert err.value.field == field
    assert err.value.line == 2


def test_missing_actions_are_refused(line_dict: dict[str, Any], write_lines: WriteLines) -> None:
    line_dict["c"]["_multi"] = []

    with pytest.raises(InvalidLoggedEvent) as err:
        read_logged_events(write_lines([line_dict]))

    assert err.value.field == "c._multi"


def test_broken_json_is_refused_with_its_line(
    line_dict: dict[str, Any], write_lines: WriteLines
) -> None:
    path = write_lines([line_dict, b'{"_label_cost": 1, broken\n'])

    with pytest.raises(InvalidLoggedEvent) as err:
        read_logged_events(path)

    assert err.value.line == 2
    assert err.value.field == "line"
