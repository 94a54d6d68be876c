"""Variance floors for binary rewards: the reward noise a small sample can fail to show.

Why: with n ~ 100 events and a success rate near 1 (or 0), a sample often holds no failure
at all. The per-event terms of IPS/SNIPS/DR are then (nearly) constant, the sample variance
is ~0 and the normal-approximation interval collapses to a point, although n Bernoulli
trials without a failure only rule out failure rates above ~3/n (the "rule of three",
Hanley & Lippman-Hand 1983). This is the Wald interval's failure at the boundary (Brown,
Cai & DasGupta 2001), carried over to importance-weighted means.

The noise every term carries: conditional on the context x_i and the logged action a_i (and
on the cross-fitted reward model, fitted without event i), the only randomness left in an
estimator's term t_i is the reward r_i, entering as w_i r_i (IPS, SNIPS) or
w_i (r_i - r_hat_i) (DR). By the law of total variance

    Var(t_i) = E[Var(t_i | x_i, a_i)] + Var(E[t_i | x_i, a_i]) >= E[w_i^2 m_i (1 - m_i)],

m_i = E[r_i | x_i, a_i] the Bernoulli success rate. A sample cannot tell m_i (1 - m_i) from 0
below a resolution set by its size: Agresti & Coull's (1998) estimate, which adds z^2/2
successes and z^2/2 failures to k trials (z the two-sided normal quantile of the interval's
confidence), m~ = (k m_hat + z^2/2) / (k + z^2), never leaves [delta, 1 - delta] and so never
reports a noise below

    delta (1 - delta),   delta = (z^2/2) / (k + z^2),   k = ess = (sum w)^2 / sum w^2,

the noise it reports for k trials without a single failure (ess: Kong 1992; = n on-policy).
The floors put that least noise into the bound above (variance of the estimate; the
estimators use max(their own variance, floor)):

    floor_IPS = floor_DR = delta (1 - delta) sum_i w_i^2 / n^2
    floor_SNIPS          = delta (1 - delta) / ess  (= delta (1 - delta) sum w^2 / (sum w)^2)

With every w = 1 this is the Agresti-Coull binomial variance of an all-success sample. For
100 successes out of 100 on-policy events the 95 % lower bound becomes
1 - 1.96 sqrt(m~ (1 - m~) / 100) = 0.974 (m~ = 0.9815), next to the rule of three (0.970)
and Wilson's score bound (0.963), instead of a zero-width interval at 1.

When it binds: for the mean estimators the sample variance is about sum_i w_i^2 r_i / n^2
for a small rate, so the floor takes over when the weighted rate
sum_i w_i^2 r_i / sum_i w_i^2 is below delta ~ (z^2/2) / ess ~ 1.92 / ess (95 %), and
symmetrically for the failure rate. On-policy (w = 1, ess = n) that is "at most about two
successes (or failures)". Off-policy, ess is often a small fraction of n, so the floor binds
on most small click-rate samples: e.g. a click rate of 0.5 % with ess below ~380. It then
widens the interval to what ess Bernoulli trials can resolve, which is the point, but it is
not a corner case there.

Why not a per-event rate: plugging the reward model's r_hat_i (1 - r_hat_i) into the bound
measures the model's uncertainty, not the reward noise. On the shuttle simulation (labels
nearly deterministic given the features, VW's linear regressor predicting ~0.9 where the
truth is 1) it made DR's interval ~3x wider than the sample variance's and wider than IPS's;
and a model that has only seen successes predicts ~1 and claims no noise at all. A pooled
rate p (1 - p) overstates the noise whenever rates differ between events (Jensen), widening
large-sample intervals for nothing. The least noise the sample size can resolve depends on
neither.

Scope: only binary rewards get a floor. A reward in {0, 1} has variance m (1 - m) exactly;
for a general bounded reward that is only an upper bound on the noise. A sample whose rewards
are all 0 or 1 (all 1 and all 0 included) is treated as Bernoulli. Point estimates are never
touched, so the intervals stay centred on them; Wald's skewness problem with a handful of
failures (Brown et al. 2001) is not addressed by a floor.

References:
    Agresti & Coull (1998), "Approximate is better than 'exact' for interval estimation of
        binomial proportions", The American Statistician 52(2), 119-126.
    Brown, Cai & DasGupta (2001), "Interval estimation for a binomial proportion",
        Statistical Science 16(2), 101-133.
    Hanley & Lippman-Hand (1983), "If nothing goes wrong, is everything all right?
        Interpreting zero numerators", JAMA 249(13), 1743-1745.
    Kong (1992), "A note on importance sampling using standardized weights", tech. rep. 348,
        U. Chicago (effective sample size).
"""

from __future__ import annotations

import numpy as np

from cbloop_pipeline.ope.bounds import is_binary
from cbloop_pipeline.ope.feedback import FloatArray

__all__ = ["boundary_noise", "is_binary", "mean_variance_floor", "ratio_variance_floor"]


def boundary_noise(trials: float, z: float) -> float:
    """delta (1 - delta), delta = (z^2/2) / (trials + z^2): the least Bernoulli variance the
    Agresti-Coull rate of `trials` trials can have (that of an all-success sample)."""
    delta = (z * z / 2.0) / (trials + z * z)
    return delta * (1.0 - delta)


def mean_variance_floor(reward: FloatArray, weights: FloatArray, z: float) -> float:
    """Floor on Var of a mean of per-event terms (IPS, DR, on-policy mean):
    delta (1 - delta) sum w^2 / n^2, delta from ess; 0 for non-binary rewards or no weight."""
    total = float(weights.sum())
    if total <= 0.0 or not is_binary(reward):
        return 0.0
    squares = float(np.dot(weights, weights))
    n = int(reward.shape[0])
    return boundary_noise(total * total / squares, z) * squares / (n * n)


def ratio_variance_floor(reward: FloatArray, weights: FloatArray, z: float) -> float:
    """Floor on Var of the self-normalised mean (SNIPS): delta (1 - delta) / ess;
    0 for non-binary rewards or no weight."""
    total = float(weights.sum())
    if total <= 0.0 or not is_binary(reward):
        return 0.0
    ess = total * total / float(np.dot(weights, weights))
    return boundary_noise(ess, z) / ess
