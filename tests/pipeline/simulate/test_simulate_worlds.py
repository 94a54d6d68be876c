"""Worlds: the table reward rule, the synthetic world's oracle, and the warm-start lines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest
import vowpalwabbit

from cbloop_pipeline.simulate.worlds import SyntheticWorld, TableWorld, WorldError
from cbloop_pipeline.tables import load_table

TABLE = """\
1.0 5 a
2.0 6 b
3.0 7 c
4.0 8 a
5.0 9 b
6.0 1 c
"""


@pytest.fixture
def table_world(tmp_path: Path) -> TableWorld:
    path = tmp_path / "tiny.txt"
    path.write_text(TABLE)
    return TableWorld(load_table(path), seed=3, length=15)


def test_table_world_pays_one_only_for_the_row_class(table_world: TableWorld) -> None:
    for t in range(len(table_world)):
        label = table_world.label(t)
        rewards = [table_world.reward(t, a) for a in range(len(table_world.actions))]
        assert rewards == [1.0 if aid == label else 0.0 for aid in table_world.action_ids]
        assert list(table_world.expected_rewards(t)) == rewards


def test_table_world_stream_visits_every_row_before_repeating(table_world: TableWorld) -> None:
    assert table_world.action_ids == ("a", "b", "c")
    assert sorted(table_world.rows[:6]) == list(range(6))
    assert sorted(table_world.rows[6:12]) == list(range(6))
    assert len(table_world.rows) == 15


def test_table_world_is_reproducible_from_the_seed(tmp_path: Path) -> None:
    path = tmp_path / "tiny.txt"
    path.write_text(TABLE)
    table = load_table(path)
    first = TableWorld(table, seed=1, length=12)
    assert first.rows == TableWorld(table, seed=1, length=12).rows
    assert first.rows != TableWorld(table, seed=2, length=12).rows


def test_table_world_contexts_carry_numeric_and_binned_views(table_world: TableWorld) -> None:
    context = table_world.context(0)
    row = table_world.table.rows[table_world.rows[0]]
    assert context["x"] == {"a1": float(row[0]), "a2": float(row[1])}
    assert set(context["b"]) == {"a1", "a2"}


def test_synthetic_oracle_is_the_best_click_probability_of_the_visitor() -> None:
    world = SyntheticWorld(seed=4, length=400)
    for t in range(0, 400, 37):
        user = world.users[int(world.visitors[t])]
        expected = world.expected_rewards(t)
        assert expected.shape == (len(world.actions),)
        assert np.all((expected > 0) & (expected < 1))
        assert world.context(t) == user.context()
        np.testing.assert_allclose(expected, world.click_prob[int(world.visitors[t])])


def test_synthetic_clicks_follow_the_hidden_probabilities() -> None:
    world = SyntheticWorld(seed=5, length=20000)
    action = 3
    clicks = np.array([world.reward(t, action) for t in range(len(world))])
    expected = np.array([world.expected_rewards(t)[action] for t in range(len(world))])
    assert set(np.unique(clicks)) <= {0.0, 1.0}
    assert abs(clicks.mean() - expected.mean()) < 0.015
    # The same (t, action) is the same draw, whoever asks.
    assert [world.reward(t, action) for t in range(50)] == list(clicks[:50])


def test_synthetic_world_rewards_personalization() -> None:
    world = SyntheticWorld(seed=0, length=3000)
    table = np.vstack([world.expected_rewards(t) for t in range(len(world))])
    uniform, best_fixed, oracle = table.mean(), table.mean(axis=0).max(), table.max(axis=1).mean()
    assert uniform < best_fixed < oracle
    assert oracle - best_fixed > 0.1
    assert len(set(table.argmax(axis=1))) > 2


def test_synthetic_actions_are_items_with_features() -> None:
    world = SyntheticWorld(seed=0, length=10)
    payload = world.action_payloads()
    assert len(payload) == 8
    assert [p["id"] for p in payload] == [f"item-{i}" for i in range(8)]
    item = world.actions[0].features["item"]
    assert item["category"] == "news"
    assert item["price"] in ("low", "mid", "high")


@pytest.mark.parametrize("kind", ["table", "synthetic"])
def test_warm_start_lines_are_labelled_uniform_events_vw_learns(
    kind: str, table_world: TableWorld
) -> None:
    world = table_world if kind == "table" else SyntheticWorld(seed=1, length=40)
    n = 6 if kind == "table" else 40
    lines = world.warm_start_lines(n, "exp")
    assert len(lines) == n
    k = len(world.actions)
    for t, line in enumerate(lines):
        assert line.startswith('{"_label_cost":')
        record = orjson.loads(line)
        assert record["experiment"] == "exp"
        assert record["p"][0] == pytest.approx(1.0 / k)
        chosen = record["_labelIndex"]
        assert record["a"][0] == chosen + 1
        if kind == "synthetic":
            assert record["_label_cost"] == -world.reward(t, chosen)
    ws = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet --epsilon 0.1")
    for line in lines:
        ws.learn(line)
    assert ws.get_weighted_examples() == n
    ws.finish()


def test_worlds_refuse_empty_streams() -> None:
    with pytest.raises(WorldError):
        SyntheticWorld(seed=0, length=0)
