"""Small samples with binary rewards: intervals must not collapse when no failure shows up.

Pure numpy worlds with known values. DR's reward model is either a fixed over-confident
prediction or a cross-fitted per-cell mean, as data-starved as a real one is at n=100.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cbloop_pipeline.ope.estimators import (
    DR,
    IPS,
    SNIPS,
    Estimate,
    estimate_all,
    on_policy_mean,
    z_value,
)
from cbloop_pipeline.ope.feedback import BanditFeedback
from cbloop_pipeline.ope.noise_floor import (
    boundary_noise,
    is_binary,
    mean_variance_floor,
    ratio_variance_floor,
)

Z95 = z_value(0.95)


def _wilson_bounds(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson (1927) score interval for a binomial proportion, the textbook reference."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _plain_std_error(terms: np.ndarray) -> float:
    return float(terms.std(ddof=1)) / math.sqrt(terms.shape[0])


# --- the floor's building blocks -------------------------------------------------------------


def _agresti_coull_rate(successes: float, n: float, z: float = Z95) -> float:
    """Agresti & Coull (1998): z^2/2 pseudo-successes and z^2/2 pseudo-failures added."""
    return (successes + z * z / 2) / (n + z * z)


def test_only_rewards_that_are_all_zero_or_one_count_as_binary() -> None:
    assert is_binary(np.array([1.0, 1.0, 1.0]))
    assert is_binary(np.array([0.0, 1.0, 0.0]))
    assert not is_binary(np.array([1.0, 0.5]))
    assert not is_binary(np.array([2.0, 2.0]))


def test_boundary_noise_is_the_least_noise_of_an_agresti_coull_rate() -> None:
    all_success = _agresti_coull_rate(100, 100)
    all_failure = _agresti_coull_rate(0, 100)
    others = [_agresti_coull_rate(k, 100) for k in range(1, 100)]

    assert boundary_noise(100.0, Z95) == pytest.approx(all_success * (1 - all_success))
    assert boundary_noise(100.0, Z95) == pytest.approx(all_failure * (1 - all_failure))
    assert all(m * (1 - m) > boundary_noise(100.0, Z95) for m in others)


def test_floors_put_the_boundary_noise_at_the_effective_sample_size_into_the_bound() -> None:
    weights = np.array([2.0, 0.5] * 25)
    ess = weights.sum() ** 2 / np.dot(weights, weights)
    noise = boundary_noise(float(ess), Z95)

    for reward in (np.ones(50), np.zeros(50), np.array([0.0, 1.0] * 25)):
        assert ratio_variance_floor(reward, weights, Z95) == pytest.approx(noise / ess)
        assert mean_variance_floor(reward, weights, Z95) == pytest.approx(
            noise * np.dot(weights, weights) / 50**2
        )


def test_no_floor_when_the_target_policy_puts_no_weight_on_the_data() -> None:
    assert mean_variance_floor(np.ones(50), np.zeros(50), Z95) == 0.0
    assert ratio_variance_floor(np.ones(50), np.zeros(50), Z95) == 0.0


def test_non_binary_rewards_get_no_floor() -> None:
    reward = np.full(100, 0.7)
    fb = BanditFeedback(
        reward=reward,
        logged_probability=np.full(100, 0.5),
        target_probability=np.full(100, 0.5),
        dm_logged=np.full(100, 0.7),
        dm_policy=np.full(100, 0.7),
    )

    for est in estimate_all(fb).values():
        assert est.std_error == pytest.approx(0.0, abs=1e-12)


# --- a sample without a single failure (or success) ------------------------------------------

LOGGING = np.array([0.7, 0.3])
TARGET = np.array([0.9, 0.1])
N_SMALL = 100


def _constant_world(rate: float, seed: int, r_hat: float) -> BanditFeedback:
    """Every action succeeds with `rate`, so every policy's true value is `rate`."""
    rng = np.random.default_rng(seed)
    action = rng.choice(2, size=N_SMALL, p=LOGGING)
    reward = (rng.random(N_SMALL) < rate).astype(np.float64)
    return BanditFeedback(
        reward=reward,
        logged_probability=LOGGING[action],
        target_probability=TARGET[action],
        dm_logged=np.full(N_SMALL, r_hat),
        dm_policy=np.full(N_SMALL, r_hat),
    )


def _all_estimates(fb: BanditFeedback) -> dict[str, Estimate]:
    return {**estimate_all(fb), "logging": on_policy_mean(fb.reward)}


@pytest.mark.parametrize("r_hat", [0.995, 1.0], ids=["model-0.995", "model-1.0"])
def test_all_success_sample_interval_covers_a_true_value_of_0_985(r_hat: float) -> None:
    # Seed 2 draws 100 successes although the success rate is 0.985 (probability 0.22).
    fb = _constant_world(0.985, seed=2, r_hat=r_hat)
    assert fb.reward.min() == 1.0
    wilson_low, _ = _wilson_bounds(N_SMALL, N_SMALL)

    estimates = _all_estimates(fb)

    assert set(estimates) == {"ips", "snips", "dr", "sndr", "switch_dr", "logging"}
    for name, est in estimates.items():
        assert est.ci_low <= 0.985 <= est.ci_high, (name, est)
        # Not collapsed: the lower bound is as far below the estimate as Wilson's or the
        # rule of three's (1 - 3/n) is below 1, give or take.
        assert est.value - est.ci_low > 0.5 * (1.0 - wilson_low), (name, est)
        assert est.ci_low > wilson_low - 0.03, (name, est)  # and not vacuous either


@pytest.mark.parametrize("r_hat", [0.005, 0.0], ids=["model-0.005", "model-0.0"])
def test_all_failure_sample_interval_covers_a_true_value_of_0_015(r_hat: float) -> None:
    fb = _constant_world(0.015, seed=1, r_hat=r_hat)
    assert fb.reward.max() == 0.0
    _, wilson_high = _wilson_bounds(0, N_SMALL)

    for name, est in _all_estimates(fb).items():
        assert est.ci_low <= 0.015 <= est.ci_high, (name, est)
        assert est.ci_high - est.value > 0.5 * wilson_high, (name, est)
        assert est.ci_high < wilson_high + 0.03, (name, est)


def test_on_policy_all_success_interval_is_comparable_to_wilson_and_the_rule_of_three() -> None:
    est = on_policy_mean(np.ones(N_SMALL))
    wilson_low, _ = _wilson_bounds(N_SMALL, N_SMALL)

    assert est.value == 1.0
    # Agresti-Coull floor: m = (100 + z^2/2) / (100 + z^2), bound 1 - z sqrt(m (1 - m) / 100).
    m = (N_SMALL + Z95**2 / 2) / (N_SMALL + Z95**2)
    assert est.ci_low == pytest.approx(1.0 - Z95 * math.sqrt(m * (1 - m) / N_SMALL))
    assert wilson_low < est.ci_low < 1.0 - 2.0 / N_SMALL
    assert abs(est.ci_low - (1.0 - 3.0 / N_SMALL)) < 0.01


def test_point_estimates_are_unchanged_by_the_floor() -> None:
    fb = _constant_world(0.985, seed=2, r_hat=0.995)
    w = fb.weights

    # raw_value: before the clip to the reward range, which the floor has nothing to do with.
    assert IPS().estimate(fb).raw_value == pytest.approx(float(np.mean(w * fb.reward)))
    assert SNIPS().estimate(fb).raw_value == pytest.approx(1.0)
    dr = float(np.mean(0.995 + w * (fb.reward - 0.995)))
    assert DR().estimate(fb).raw_value == pytest.approx(dr)


def test_large_binary_samples_keep_the_plain_sample_variance() -> None:
    # Success rates differ between contexts and actions, and the reward model is close to
    # them but not exact, as a fitted one is.
    rng = np.random.default_rng(7)
    n = 5000
    rates = np.array([[0.3, 0.8], [0.6, 0.2], [0.9, 0.5]])
    r_hat = rates + np.array([[0.03, -0.02], [-0.04, 0.05], [0.02, -0.03]])
    context = rng.integers(3, size=n)
    action = rng.choice(2, size=n, p=LOGGING)
    reward = (rng.random(n) < rates[context, action]).astype(np.float64)
    fb = BanditFeedback(
        reward=reward,
        logged_probability=LOGGING[action],
        target_probability=TARGET[action],
        dm_logged=r_hat[context, action],
        dm_policy=r_hat[context] @ TARGET,
    )
    w = fb.weights
    dr_terms = np.asarray(fb.dm_policy) + w * (reward - np.asarray(fb.dm_logged))
    snips = float(np.dot(w, reward) / w.sum())
    snips_se = float(np.linalg.norm(w * (reward - snips)) / w.sum())

    assert IPS().estimate(fb).std_error == pytest.approx(_plain_std_error(w * reward))
    assert SNIPS().estimate(fb).std_error == pytest.approx(snips_se)
    assert DR().estimate(fb).std_error == pytest.approx(_plain_std_error(dr_terms))
    assert on_policy_mean(reward).std_error == pytest.approx(_plain_std_error(reward))


def test_dr_interval_ignores_an_under_confident_reward_model_when_failures_show() -> None:
    # Deterministic rewards (success iff the action matches the context's class), as in a
    # classification data set, and a shrunk regressor: r_hat (1 - r_hat) = 0.16 everywhere
    # although the reward noise is 0. The sample variance is the right measure here.
    rng = np.random.default_rng(3)
    n = 200
    label = rng.integers(2, size=n)
    action = rng.choice(2, size=n, p=LOGGING)
    reward = (action == label).astype(np.float64)
    r_hat = np.where(action == label, 0.8, 0.2)
    fb = BanditFeedback(
        reward=reward,
        logged_probability=LOGGING[action],
        target_probability=TARGET[action],
        dm_logged=r_hat,
        dm_policy=np.where(
            label == 0, 0.8 * TARGET[0] + 0.2 * TARGET[1], 0.2 * TARGET[0] + 0.8 * TARGET[1]
        ),
    )
    terms = np.asarray(fb.dm_policy) + fb.weights * (reward - r_hat)

    # The model's noise floor (sum w^2 r_hat (1 - r_hat) / n^2) is a max with the sample
    # variance, not a replacement: here it widens DR's interval by a few per cent at most,
    # where plugging it in alone would claim 0.16 of noise on every event.
    assert DR().estimate(fb).std_error == pytest.approx(_plain_std_error(terms), rel=0.05)


# --- calibration over many small samples of a high-value world -------------------------------

# Rows: 4 segments; columns: 3 actions. Action 0 is the best in every segment.
HIGH_REWARD = np.array(
    [
        [0.99, 0.95, 0.90],
        [0.985, 0.90, 0.95],
        [0.98, 0.95, 0.90],
        [0.975, 0.90, 0.95],
    ]
)
SEEDS = 500


def _greedy_pmf(epsilon: float) -> np.ndarray:
    pmf = np.full(3, epsilon / 3)
    pmf[0] += 1.0 - epsilon
    return pmf


def _cross_fitted_cell_means(
    segment: np.ndarray, action: np.ndarray, reward: np.ndarray
) -> np.ndarray:
    """Two-fold out-of-fold mean reward per (segment, action); the fold's mean if unseen.

    At n=100 most cells hold only successes, so the model predicts exactly 1 for them: the
    over-confident reward model the floor must not rely on.
    """
    n = reward.shape[0]
    fold = np.arange(n) % 2
    r_hat = np.zeros((n, 3))
    for k in (0, 1):
        train, test = fold != k, fold == k
        for s in range(HIGH_REWARD.shape[0]):
            for a in range(3):
                cell = train & (segment == s) & (action == a)
                mean = reward[cell].mean() if cell.any() else reward[train].mean()
                r_hat[test & (segment == s), a] = mean
    return r_hat


@pytest.mark.parametrize(
    ("logging_epsilon", "target_epsilon"),
    [(0.2, 0.1), (0.1, 0.1)],
    ids=["target-greedier-than-logging", "target-is-logging"],
)
def test_intervals_cover_a_high_value_in_small_samples(
    logging_epsilon: float, target_epsilon: float
) -> None:
    mu, pi = _greedy_pmf(logging_epsilon), _greedy_pmf(target_epsilon)
    truth = float(np.mean(HIGH_REWARD @ pi))
    assert 0.975 < truth < 0.985
    covered = dict.fromkeys(("ips", "snips", "dr", "sndr", "switch_dr"), 0)
    plain_dr_covered = 0
    all_success_samples = 0

    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        segment = rng.integers(HIGH_REWARD.shape[0], size=N_SMALL)
        action = rng.choice(3, size=N_SMALL, p=mu)
        reward = (rng.random(N_SMALL) < HIGH_REWARD[segment, action]).astype(np.float64)
        r_hat = _cross_fitted_cell_means(segment, action, reward)
        fb = BanditFeedback(
            reward=reward,
            logged_probability=mu[action],
            target_probability=pi[action],
            dm_logged=r_hat[np.arange(N_SMALL), action],
            dm_policy=r_hat @ pi,
        )
        for name, est in estimate_all(fb).items():
            covered[name] += est.ci_low <= truth <= est.ci_high
        terms = np.asarray(fb.dm_policy) + fb.weights * (reward - np.asarray(fb.dm_logged))
        plain_dr_covered += abs(float(terms.mean()) - truth) <= Z95 * _plain_std_error(terms)
        all_success_samples += bool(reward.min() == 1.0)

    assert all_success_samples > 0.05 * SEEDS  # the case this is about does occur
    for name, hits in covered.items():
        assert hits / SEEDS >= 0.90, (name, hits / SEEDS)
    # The sample-variance interval alone falls well short on the same samples, so the
    # coverage above is the floor's doing.
    assert plain_dr_covered / SEEDS < 0.93
