"""Sampling from the policy's pmf, reproducibly from the event id."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from cbloop.sampling import (
    InvalidPmf,
    choose,
    normalize_pmf,
    ranking_order,
    sample_index,
    seeded_uniform,
    split_draw,
)

N_DRAWS = 20_000
EVENT_IDS = [f"e-{i:06d}" for i in range(N_DRAWS)]


def _chi_square(observed: list[int], expected: list[float]) -> float:
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


# ------------------------------------------------------------------------ normalize_pmf


def test_normalized_float32_pmf_sums_to_one_and_keeps_proportions() -> None:
    raw = np.array([0.7, 0.2, 0.1], dtype=np.float32)
    raw *= np.float32(1.0003)  # VW's float32 pmf rarely sums to exactly 1
    pmf = normalize_pmf(raw.tolist(), 3)
    assert math.fsum(pmf) == pytest.approx(1.0, abs=1e-15)
    assert pmf[0] / pmf[1] == pytest.approx(3.5, rel=1e-6)
    assert all(isinstance(p, float) for p in pmf)


def test_normalized_pmf_keeps_zero_entries_zero() -> None:
    pmf = normalize_pmf([0.0, 2.0, 0.0, 2.0], 4)
    assert pmf == [0.0, 0.5, 0.0, 0.5]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([0.5, float("nan")], "invalid entry"),
        ([0.5, float("inf")], "invalid entry"),
        ([0.9, -0.1], "invalid entry"),
        ([0.0, 0.0], "sums to zero"),
        ([0.5, 0.5, 0.0], "3 entries for 2 actions"),
        ([], "0 entries for 2 actions"),
    ],
)
def test_normalize_pmf_rejects_what_is_not_a_distribution(raw: list[float], match: str) -> None:
    with pytest.raises(InvalidPmf, match=match):
        normalize_pmf(raw, 2)


# ---------------------------------------------------------------------------- choosing


def test_same_event_id_gives_the_same_choice() -> None:
    pmf = [0.25, 0.25, 0.25, 0.25]
    for event_id in EVENT_IDS[:200]:
        assert choose(event_id, pmf) == choose(event_id, list(pmf))


def test_different_event_ids_give_different_choices() -> None:
    pmf = [0.25, 0.25, 0.25, 0.25]
    assert len({choose(event_id, pmf) for event_id in EVENT_IDS[:50]}) == 4


def test_choice_frequencies_over_many_event_ids_match_the_pmf() -> None:
    pmf = [0.5, 0.3, 0.15, 0.05, 0.0]
    counts = Counter(choose(event_id, pmf) for event_id in EVENT_IDS)
    assert counts[4] == 0
    observed = [counts[i] for i in range(4)]
    expected = [p * N_DRAWS for p in pmf[:4]]
    # 3 degrees of freedom: P(chi2 > 20) ~ 2e-4; the ids are fixed, so this never flakes.
    assert _chi_square(observed, expected) < 20.0


def test_zero_probability_actions_are_never_chosen() -> None:
    pmf = normalize_pmf([0.0, 0.4, 0.0, 0.6, 0.0], 5)
    chosen = {choose(event_id, pmf) for event_id in EVENT_IDS[:5000]}
    assert chosen == {1, 3}


@pytest.mark.parametrize("u", [0.0, 0.5, 0.999999, math.nextafter(1.0, 0.0)])
def test_sample_index_skips_zero_probability_ends(u: float) -> None:
    assert sample_index([0.0, 1.0, 0.0], u) == 1


def test_sample_index_falls_back_to_the_last_positive_when_rounding_leaves_a_gap() -> None:
    # Sums to slightly less than 1, so u just under 1 passes every cumulative bound.
    pmf = [0.3, 0.3, 0.3999999, 0.0]
    assert sample_index(pmf, 0.99999999) == 2


def test_sample_index_is_the_inverse_cdf() -> None:
    pmf = [0.2, 0.5, 0.3]
    assert sample_index(pmf, 0.0) == 0
    assert sample_index(pmf, 0.1999) == 0
    assert sample_index(pmf, 0.2) == 1
    assert sample_index(pmf, 0.6999) == 1
    assert sample_index(pmf, 0.7) == 2


# ------------------------------------------------------------------------- uniform draws


def test_split_draw_is_deterministic_and_in_unit_interval() -> None:
    draws = [split_draw(event_id) for event_id in EVENT_IDS]
    assert draws == [split_draw(event_id) for event_id in EVENT_IDS]
    assert min(draws) >= 0.0
    assert max(draws) < 1.0


def test_split_draw_is_uniform() -> None:
    bins = Counter(int(split_draw(event_id) * 10) for event_id in EVENT_IDS)
    observed = [bins[i] for i in range(10)]
    # 9 degrees of freedom: P(chi2 > 35) ~ 6e-5.
    assert _chi_square(observed, [N_DRAWS / 10] * 10) < 35.0
    train = sum(split_draw(event_id) < 0.8 for event_id in EVENT_IDS)
    assert train / N_DRAWS == pytest.approx(0.8, abs=0.015)


def test_split_draw_is_independent_of_the_choice_draw() -> None:
    split = np.array([split_draw(event_id) for event_id in EVENT_IDS[:5000]])
    choice = np.array([seeded_uniform(event_id, "choice") for event_id in EVENT_IDS[:5000]])
    assert not np.array_equal(split, choice)
    assert abs(np.corrcoef(split, choice)[0, 1]) < 0.05


def test_seeded_uniform_has_53_bits_of_resolution() -> None:
    draws = {seeded_uniform(event_id, "choice") for event_id in EVENT_IDS}
    assert len(draws) == N_DRAWS
    assert all((d * 2.0**53).is_integer() for d in list(draws)[:100])


# ------------------------------------------------------------------------------ ranking


def test_ranking_puts_the_chosen_first_then_decreasing_probability_ties_by_position() -> None:
    pmf = [0.1, 0.3, 0.2, 0.3, 0.1]
    assert ranking_order(pmf, chosen=4) == [4, 1, 3, 2, 0]
    assert ranking_order(pmf, chosen=1) == [1, 3, 2, 0, 4]


def test_ranking_is_a_permutation_of_all_actions() -> None:
    pmf = normalize_pmf([0.05] * 20, 20)
    order = ranking_order(pmf, chosen=choose("e-1", pmf))
    assert sorted(order) == list(range(20))
