"""Policy search on the seeded cross world: it must find the user x item cross."""

from __future__ import annotations

from tuning_world import HIGH, UNIFORM_VALUE, World

from cbloop_pipeline.tuning.grid import expand, grid_candidates
from cbloop_pipeline.tuning.search import SearchOptions, run_search


def test_search_ranks_the_missing_cross_first_and_would_apply_it(cross_world: World) -> None:
    grid = {
        "interactions": ["--interactions :A", "--interactions :A -q ui"],
        "exploration": [{"type": "squarecb", "gamma_scale": 10}],
    }
    candidates = expand(grid, cross_world.experiment)
    seen: list[str] = []
    result = run_search(
        cross_world.store,
        "default",
        cross_world.experiment,
        cross_world.joins,
        candidates,
        options=SearchOptions(estimator="dr"),
        on_scored=lambda s: seen.append(s.name),
    )
    winner = result.winner
    assert "-q ui" in winner.candidate.vw_args
    assert result.current.name == "current"
    assert "-q ui" not in result.current.candidate.vw_args
    # The grid's ":A" entry equals the current settings and is scored once, as "current".
    assert sorted(seen) == sorted(s.name for s in result.ranked) and len(seen) == 2
    assert winner.estimate is not None and result.current.estimate is not None
    # The cross earns near HIGH; without it the policy is no better than the uniform logger.
    assert winner.estimate.value > HIGH - 0.15
    assert result.current.estimate.value < UNIFORM_VALUE + 0.1
    assert result.lift is not None and result.lift.ci_low > 0.3
    decision = result.decision()
    assert decision.apply, decision.reason
    record = result.to_dict()
    assert record["winner"] == winner.name and record["decision"]["apply"] is True


def test_default_grid_finds_a_cross_the_default_settings_lack(cross_world: World) -> None:
    result = run_search(
        cross_world.store,
        "default",
        cross_world.experiment,
        cross_world.joins,
        grid_candidates(None, cross_world.experiment),
    )
    # The default grid's all-pairs option (`--interactions ::`) holds user x item.
    assert "--interactions ::" in result.winner.candidate.vw_args
    assert result.lift is not None and result.lift.ci_low > 0.3
    assert result.decision().apply


def test_a_candidate_vw_refuses_ranks_last_with_its_reason(cross_world: World) -> None:
    grid = {"interactions": ["-q ui --cb_type bogus", "-q ui"]}
    result = run_search(
        cross_world.store,
        "default",
        cross_world.experiment,
        cross_world.joins,
        expand(grid, cross_world.experiment),
    )
    last = result.ranked[-1]
    assert "bogus" in last.candidate.vw_args
    assert last.estimate is None and last.error is not None and "bogus" in last.error
    assert "-q ui" in result.winner.candidate.vw_args and result.winner.error is None
    assert result.to_dict()["ranked"][-1]["error"] == last.error
