"""Grids of candidate settings: expansion, the default grid, and refusals naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from cbloop.settings import ExperimentSettings
from cbloop_pipeline.tuning.grid import (
    DEFAULT_GRID,
    MAX_CANDIDATES,
    GridError,
    current_candidate,
    expand,
    grid_candidates,
)

BASE = ExperimentSettings(vw_args="--interactions :A -b 18 --l2 1e-6")


def test_grid_replaces_only_the_dimensions_it_names() -> None:
    grid = {"interactions": ["-q ui"], "learning_rate": [0.1], "bits": [20]}
    (cand,) = expand(grid, BASE)
    assert cand.vw_args.split() == ["-q", "ui", "-b", "20", "-l", "0.1", "--l2", "1e-6"]
    assert cand.settings.exploration == BASE.exploration
    assert cand.vw_arguments().startswith("--cb_explore_adf ")


def test_grid_combines_every_value_and_drops_duplicates() -> None:
    grid = {
        "interactions": ["--interactions :A", "--interactions :A"],
        "exploration": [{"type": "egreedy", "epsilon": 0.1}, {"type": "squarecb"}],
    }
    cands = expand(grid, BASE)
    assert [c.settings.exploration.type for c in cands] == ["egreedy", "squarecb"]
    assert cands[0].settings.exploration.epsilon == 0.1


def test_default_grid_is_valid_and_holds_an_all_pairs_cross() -> None:
    cands = grid_candidates(None, ExperimentSettings())
    assert len(cands) == 12 == len(DEFAULT_GRID["interactions"]) * 2 * 3
    assert any("--interactions ::" in c.vw_args for c in cands)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("interactions: ['--data x']", "'--data' is not allowed"),
        ("interactions: ['--epsilon 0.1']", "'exploration' section"),
        ("exploration: [{type: thompson}]", "exploration.type"),
        ("exploration: [{type: egreedy, epsilon: 2}]", "exploration.epsilon"),
        ("bits: [40]", "outside 1..30"),
        ("learning_rate: [-1]", "positive number"),
        ("interaction: ['-q ui']", "unknown grid key(s) interaction"),
        ("interactions: []", "non-empty list"),
        ("- just a list", "must hold a mapping"),
        ("interactions: [unclosed", "not valid YAML"),
    ],
)
def test_bad_grid_file_names_file_and_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(GridError) as info:
        grid_candidates(path, BASE)
    assert problem in str(info.value)
    assert str(path) in str(info.value)


def test_oversized_grid_is_refused() -> None:
    grid = {"learning_rate": [0.01 * (i + 1) for i in range(MAX_CANDIDATES + 1)]}
    with pytest.raises(GridError, match="combinations"):
        expand(grid, BASE)


def test_candidates_differing_only_in_flag_order_are_one() -> None:
    base = ExperimentSettings(vw_args="-b 18 --interactions :A")
    grid = {"interactions": ["--interactions :A"], "bits": [18]}
    (cand,) = expand(grid, base)
    assert cand.vw_args != base.vw_args
    assert cand.key() == current_candidate(base).key()
