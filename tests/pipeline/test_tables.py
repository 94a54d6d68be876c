"""Labelled tables: loading, encoding and uniform warm-start events learned by real VW."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import vowpalwabbit

from cbloop.encoding import Namespaces, build_vw_context, encode_context, predict_line
from cbloop_pipeline.tables import (
    BINNED_NAMESPACE,
    NUMERIC_NAMESPACE,
    LabelledTable,
    TableEncoder,
    TableError,
    fit_encoder,
    load_table,
    logged_uniform_events,
    reward_for,
)

SHUTTLE = Path(__file__).resolve().parents[3] / "shared/data/statlog-shuttle/shuttle.trn"
VW_ARGS = "--cb_explore_adf --dsjson --quiet --random_seed 7 -q bA -q xA"


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _synthetic_csv(path: Path, n: int, seed: int) -> Path:
    """Three classes by x1's band, except that tag "special" is always "eel"; x2 is noise."""
    rng = np.random.default_rng(seed)
    lines = ["x1,x2,tag,label"]
    for _ in range(n):
        x1, x2 = rng.uniform(0, 10), rng.normal(0, 1)
        tag = str(rng.choice(["plain", "plain", "plain", "special"]))
        band = 0 if x1 < 3.3 else (1 if x1 < 6.6 else 2)
        label = "eel" if tag == "special" else ("cat", "dog", "eel")[band]
        lines.append(f"{x1:.3f},{x2:.3f},{tag},{label}")
    return _write(path, "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------- loading


def test_whitespace_table_without_header_takes_last_column_as_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.trn", "50 21 77 2\n55 0  92 4\n\n53 0 82 1\n")
    table = load_table(path)
    assert table.columns == ("a1", "a2", "a3")
    assert table.label_name == "a4"
    assert table.rows == (("50", "21", "77"), ("55", "0", "92"), ("53", "0", "82"))
    assert table.labels == ("2", "4", "1")


def test_csv_header_is_sniffed_and_label_picked_by_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "colour,size,kind\nred,1.5,a\nblue,2,b\nred,3,a\n")
    table = load_table(path, "colour")
    assert table.columns == ("size", "kind")
    assert table.label_name == "colour"
    assert table.labels == ("red", "blue", "red")
    assert table.rows[1] == ("2", "b")


def test_csv_without_header_uses_generated_names_and_int_label(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "1,2.5,x\n0,3.5,y\n1,1.0,x\n")
    table = load_table(path, 0)
    assert table.columns == ("a2", "a3")
    assert table.labels == ("1", "0", "1")
    assert load_table(path, -1).labels == ("x", "y", "x")


def test_semicolon_and_tab_delimited_files_are_read(tmp_path: Path) -> None:
    semi = load_table(_write(tmp_path / "s.csv", "a;b;y\n1;2;u\n3;4;v\n"))
    tab = load_table(_write(tmp_path / "t.tsv", "a\tb\ty\n1\t2\tu\n3\t4\tv\n"))
    assert semi.columns == tab.columns == ("a", "b")
    assert semi.rows == tab.rows == (("1", "2"), ("3", "4"))


def test_header_can_be_forced_when_sniffing_cannot_tell(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.csv", "p,q\nr,s\nt,u\n")
    assert len(load_table(path, header=False)) == 3
    assert load_table(path, header=True).columns == ("p",)


def test_numeric_labels_sort_by_value(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.txt", "1 10\n2 2\n3 1\n4 2\n")
    assert load_table(path).classes == ("1", "2", "10")


@pytest.mark.parametrize(
    ("content", "label_col", "message"),
    [
        ("1,2,a\n3,4\n5,6,b\n", None, "line 2 has 2 fields, expected 3"),
        ("1,2,a\n3,4,b\n", 3, "label column 3 out of range"),
        ("1,2,a\n3,4,b\n", -4, "label column -4 out of range"),
        ("x,y,z\n1,2,a\n3,4,b\n", "w", "'w' not in the header"),
        ("1,2,a\n3,4,b\n", "z", "has no header"),
        ("1,2,a\n3,4,a\n", None, "fewer than 2 classes"),
        ("", None, "has no rows"),
        ("x,y,z\n", "z", "no data rows"),
        ("1\n2\n", None, "needs at least one attribute"),
        ("1,2,a\n3,4,?\n", None, "line 2 has no label"),
    ],
)
def test_bad_tables_raise_table_error_naming_the_problem(
    tmp_path: Path, content: str, label_col: str | int | None, message: str
) -> None:
    path = _write(tmp_path / "bad.csv", content)
    with pytest.raises(TableError, match=message):
        load_table(path, label_col)


def test_missing_file_raises_table_error(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="not found"):
        load_table(tmp_path / "absent.csv")


# --------------------------------------------------------------------------------- encoding


def test_encoder_gives_raw_numbers_bins_and_categories(tmp_path: Path) -> None:
    body = "".join(f"{i},{'ab'[i % 2]},{i if i % 3 else '?'},{i % 2}\n" for i in range(20))
    path = _write(tmp_path / "t.csv", "n,c,m,y\n" + body)
    encoder = fit_encoder(load_table(path), bins=4)
    assert [c.kind for c in encoder.columns] == ["numeric", "categorical", "numeric"]
    assert encoder.actions == ("0", "1")
    assert encoder.context(("0", "a", "?")) == {
        NUMERIC_NAMESPACE: {"n": 0.0},
        BINNED_NAMESPACE: {"n": "q0", "c": "a", "m": "na"},
    }
    assert encoder.context(("19", "b", "19")) == {
        NUMERIC_NAMESPACE: {"n": 19.0, "m": 19.0},
        BINNED_NAMESPACE: {"n": "q3", "c": "b", "m": "q3"},
    }
    assert encoder.action_payloads() == [{"id": "0", "features": {}}, {"id": "1", "features": {}}]


def test_encoder_views_can_be_switched_off(tmp_path: Path) -> None:
    table = load_table(_synthetic_csv(tmp_path / "s.csv", 50, seed=1))
    binned_only = fit_encoder(table, numeric=False).context(table.rows[0])
    numeric_only = fit_encoder(table, binned=False).context(table.rows[0])
    assert set(binned_only) == {BINNED_NAMESPACE}
    assert set(numeric_only[BINNED_NAMESPACE]) == {"tag"}  # categories stay
    assert set(numeric_only[NUMERIC_NAMESPACE]) == {"x1", "x2"}
    with pytest.raises(TableError):
        fit_encoder(table, numeric=False, binned=False)


def test_encoder_is_deterministic_and_ignores_row_order(tmp_path: Path) -> None:
    table = load_table(_synthetic_csv(tmp_path / "s.csv", 300, seed=2))
    shuffled = table.subset(list(np.random.default_rng(0).permutation(len(table))))
    first, second = fit_encoder(table), fit_encoder(shuffled)
    assert first == second
    assert [first.context(r) for r in table.rows] == [second.context(r) for r in table.rows]


def test_encoder_description_round_trips_through_json(tmp_path: Path) -> None:
    table = load_table(_synthetic_csv(tmp_path / "s.csv", 100, seed=5))
    encoder = fit_encoder(table, numeric=False, bins=4)
    restored = TableEncoder.from_dict(json.loads(json.dumps(encoder.to_dict())))
    assert restored == encoder
    with pytest.raises(TableError, match="malformed"):
        TableEncoder.from_dict({"columns": [{"name": "x", "kind": "weird", "edges": []}]})


def test_encoder_rejects_rows_of_the_wrong_width(tmp_path: Path) -> None:
    encoder = fit_encoder(load_table(_synthetic_csv(tmp_path / "s.csv", 20, seed=3)))
    with pytest.raises(TableError, match="expects 3"):
        encoder.context(("1.0", "2.0"))


def test_reward_is_one_for_the_row_class_only() -> None:
    assert reward_for("3", "3") == 1.0
    assert reward_for("3", "1") == 0.0


# ------------------------------------------------------------------------- warm-start events


def _synthetic_split(tmp_path: Path) -> tuple[LabelledTable, LabelledTable]:
    table = load_table(_synthetic_csv(tmp_path / "s.csv", 2500, seed=4))
    return table.subset(range(2000)), table.subset(range(2000, 2500))


def test_uniform_events_follow_the_joined_data_contract(tmp_path: Path) -> None:
    train, _ = _synthetic_split(tmp_path)
    encoder = fit_encoder(train)
    lines = logged_uniform_events(train, 50, seed=5, encoder=encoder, experiment="exp")
    for line in lines:
        event = json.loads(line)
        assert list(event)[:7] == [
            "_label_cost", "_label_probability", "_label_Action", "_labelIndex",
            "EventId", "Timestamp", "Version",
        ]  # fmt: skip
        assert list(event).index("c") > 3
        k = len(encoder.actions)
        assert event["action_ids"] == list(encoder.actions) == ["cat", "dog", "eel"]
        assert sorted(event["a"]) == list(range(1, k + 1))
        assert event["_label_Action"] == event["a"][0]
        # VW credits the cost to _multi[_labelIndex], so it is the chosen action's position.
        assert event["_labelIndex"] == event["_label_Action"] - 1
        assert event["p"] == [1 / k] * k
        assert event["_label_probability"] == 1 / k
        assert event["c"]["_multi"] == [{"ActionId": {"id": a}} for a in encoder.actions]
        assert event["experiment"] == "exp"
        assert 0.0 <= event["sample_prob"] < 1.0
    # Rewards are exactly "chosen class == row class" for the row whose context was logged.
    # Keyed by the context as logged (string values carry cbloop.encoding's "=").
    row_of = {json.dumps(_logged_shared(encoder.context(r)), sort_keys=True): lab for r, lab in
              zip(train.rows, train.labels, strict=True)}  # fmt: skip
    for line in lines:
        event = json.loads(line)
        shared = {ns: f for ns, f in event["c"].items() if ns != "_multi"}
        chosen = event["action_ids"][event["_label_Action"] - 1]
        label = row_of[json.dumps(shared, sort_keys=True)]
        assert event["_label_cost"] == -reward_for(label, chosen)


def test_uniform_events_are_reproducible_and_cycle_through_rows(tmp_path: Path) -> None:
    train, _ = _synthetic_split(tmp_path)
    small = train.subset(range(10))
    assert logged_uniform_events(small, 25, seed=1) == logged_uniform_events(small, 25, seed=1)
    assert logged_uniform_events(small, 25, seed=1) != logged_uniform_events(small, 25, seed=2)
    contexts = [json.dumps(json.loads(x)["c"], sort_keys=True) for x in
                logged_uniform_events(small, 20, seed=3)]  # fmt: skip
    # Two full passes over 10 distinct rows: each row's context shows up exactly twice.
    assert sorted(contexts.count(c) for c in set(contexts)) == [2] * 10
    assert logged_uniform_events(small, 0, seed=1) == []
    with pytest.raises(TableError, match="non-negative"):
        logged_uniform_events(small, -1, seed=1)
    with pytest.raises(TableError, match="no rows"):
        logged_uniform_events(small.subset([]), 1, seed=1, encoder=fit_encoder(small))
    ids = [json.loads(x)["EventId"] for x in logged_uniform_events(small, 25, seed=1)]
    assert len(set(ids)) == 25


def _logged_shared(context: Namespaces) -> dict[str, object]:
    return {ns: f for ns, f in build_vw_context(context, []).items() if ns != "_multi"}


def _greedy_accuracy(
    ws: vowpalwabbit.Workspace, table: LabelledTable, encoder: TableEncoder
) -> float:
    hits = 0
    for row, label in zip(table.rows, table.labels, strict=True):
        c = build_vw_context(encoder.context(row), [(a, {}) for a in encoder.actions])
        pmf = ws.predict(predict_line(encode_context(c)))
        hits += encoder.actions[int(np.argmax(pmf))] == label
    return hits / len(table)


def test_vw_learns_from_uniform_events_and_beats_uniform_on_held_out_rows(
    tmp_path: Path,
) -> None:
    train, test = _synthetic_split(tmp_path)
    encoder = fit_encoder(train)
    ws = vowpalwabbit.Workspace(VW_ARGS)
    untrained = _greedy_accuracy(ws, test, encoder)
    for line in logged_uniform_events(train, 2000, seed=6, encoder=encoder):
        ws.learn(line)
    accuracy = _greedy_accuracy(ws, test, encoder)
    ws.finish()
    assert untrained < 0.5
    assert accuracy > 0.85  # uniform would be 1/3


@pytest.mark.skipif(not SHUTTLE.exists(), reason="shared shuttle data not present")
def test_shuttle_loads_and_a_uniform_warm_start_beats_always_class_one() -> None:
    table = load_table(SHUTTLE)
    assert (len(table), len(table.columns)) == (43500, 9)
    assert table.classes == ("1", "2", "3", "4", "5", "6", "7")
    order = [int(i) for i in np.random.default_rng(0).permutation(len(table))[:4000]]
    train, test = table.subset(order[:3000]), table.subset(order[3000:])
    encoder = fit_encoder(table)
    ws = vowpalwabbit.Workspace(VW_ARGS)
    for line in logged_uniform_events(train, 3000, seed=8, encoder=encoder):
        ws.learn(line)
    accuracy = _greedy_accuracy(ws, test, encoder)
    ws.finish()
    assert accuracy > 0.85  # always choosing class 1 scores about 0.78
