"""Cross-fitted reward model for the DR-family estimators, on the probability scale.

Model: a logistic-link regression of the reward, scaled to [0, 1] by the reward range
(lo, hi), on categorical tokens (pipeline.ope.features):

    r_hat(x, a) = lo + (hi - lo) * sigmoid(b + sum_s u_s + sum_g v_g + sum_s W[s, key(a)])

over the shared tokens s of x, the tokens g of action a, and every shared token crossed with
the action's key (personalisation). For 0/1 rewards this is logistic regression; for other
bounded rewards it is the fractional logit of Papke & Wooldridge (1996), the same Bernoulli
log-likelihood on the scaled reward. Either way a prediction can never leave [lo, hi]: the
range is the link's, not a clip after the fact. (lo, hi) = (0, 1) for 0/1 rewards, else the
observed reward range.

Why not VW's `--cb_adf --cb_type mtr` (the previous model): squared loss on costs with the
raw numeric feature values, which predicted far outside the reward range on sparse clicks and
let one feature value of 1e12 produce a click rate of 2.5e8. Tokens are bounded by
construction (every feature value is 1) and binned numbers cannot scale a weight.

Fit: penalised maximum likelihood, L2 penalty ||w||^2 / (2 * 0.1 * n_train) on every weight
but the bias (a N(0, 0.1) prior on each logit effect: most crossed tokens see a handful of
events, and on the wild world of pipeline.simulate.ope_worlds this prior gave DR a lower RMSE
and better coverage than N(0, 1)), by full-batch Adam for a fixed number of steps
from b = logit(mean reward) and w = 0; deterministic. Training events per fold are capped
(a seeded subsample) because the model only has to be decent: DR is unbiased whatever its
quality, and the cap bounds the fit's time on very large files.

Cross-fitting: events are split into K folds by a keyed hash of their event id (deterministic,
independent of file order); fold k's events are predicted by the model fitted on the other
folds, so no event is scored by a model that saw it, which keeps DR's per-event terms
independent and its variance estimate honest (Chernozhukov et al. 2018; Dudik, Langford & Li
2011). The data is read once; all K fits run on the in-memory tokens.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbloop.errors import InvalidInput
from cbloop_pipeline.ope.bounds import reward_range
from cbloop_pipeline.ope.features import EventFeatures, read_events_and_features
from cbloop_pipeline.ope.logged import FloatArray, IntArray, LoggedEvents, ObjectArray

logger = logging.getLogger(__name__)

DEFAULT_FOLDS = 2
DEFAULT_STEPS = 150
DEFAULT_MAX_TRAIN = 100_000
_LEARNING_RATE = 0.1
#: Prior variance of each logit effect (the L2 penalty is ||w||^2 / (2 n_train * this)).
_PRIOR_VARIANCE = 0.1
_MAX_CROSS = 1 << 20
_PREDICT_CHUNK = 100_000


class RewardModelMismatch(InvalidInput, ValueError):
    """A reward model fitted on other events than the ones being evaluated."""


def assign_folds(event_ids: ObjectArray, folds: int, seed: int) -> IntArray:
    """Fold of each event: keyed blake2b of the event id modulo `folds`.

    Python's hash() is salted per process, so it would not give the same folds twice.
    """
    if folds < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {folds}")
    prefix = f"{seed}\x00".encode()
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(prefix + str(e).encode(), digest_size=8).digest(), "big")
            % folds
            for e in event_ids
        ),
        dtype=np.int64,
        count=len(event_ids),
    )


@dataclass(frozen=True, eq=False)
class RewardModel:
    """Out-of-fold reward predictions for every action of every event of one file.

    Attributes:
        event_id: events in file order (the model is only valid for exactly these).
        offsets: event i's actions are predicted_reward[offsets[i]:offsets[i + 1]].
        predicted_reward: r_hat(x_i, a) for every `_multi` action a, flat; within `bounds`.
        fold: each event's fold.
        train_counts: events each fold's model was trained on.
        folds, seed: the cross-fitting set-up.
        bounds: the reward range (lo, hi) the predictions live in.
    """

    event_id: ObjectArray
    offsets: IntArray
    predicted_reward: FloatArray
    fold: IntArray
    train_counts: tuple[int, ...]
    folds: int
    seed: int
    bounds: tuple[float, float]

    @property
    def n(self) -> int:
        return int(self.event_id.shape[0])

    def event_rewards(self, i: int) -> FloatArray:
        return self.predicted_reward[self.offsets[i] : self.offsets[i + 1]]

    def check_matches(self, logged: LoggedEvents) -> None:
        """Raise `RewardModelMismatch` unless fitted on exactly `logged`'s events, in order."""
        if logged.n != self.n:
            raise RewardModelMismatch(f"reward model has {self.n} events, data has {logged.n}")
        if not np.array_equal(logged.event_id, self.event_id):
            i = int(np.flatnonzero(logged.event_id != self.event_id)[0])
            raise RewardModelMismatch(
                f"event {i}: data has {logged.event_id[i]!r}, reward model {self.event_id[i]!r}"
            )
        if not np.array_equal(logged.offsets, self.offsets):
            raise RewardModelMismatch("numbers of actions per event differ from the data")

    def dm_logged(self, logged_action: IntArray) -> FloatArray:
        """r_hat(x_i, a_i) for the logged (0-based) actions."""
        picked = self.predicted_reward[self.offsets[:-1] + logged_action]
        return np.asarray(picked, dtype=np.float64)

    def dm_policy(self, pmf: FloatArray) -> FloatArray:
        """sum_a pi(a|x_i) r_hat(x_i, a) for a flat pmf aligned with `offsets`."""
        if pmf.shape != self.predicted_reward.shape:
            raise RewardModelMismatch(
                f"pmf has {pmf.shape[0]} entries, reward model {self.predicted_reward.shape[0]}"
            )
        if self.n == 0:
            return np.zeros(0, dtype=np.float64)
        sums = np.add.reduceat(pmf * self.predicted_reward, self.offsets[:-1])
        return np.asarray(sums, dtype=np.float64)


class _Design:
    """Column ids of the model's features (bias, shared, action, crossed) for (event, key)."""

    def __init__(self, f: EventFeatures) -> None:
        self.f = f
        self.shared_base = 1
        self.action_base = 1 + f.n_shared
        self.cross_base = self.action_base + f.n_action
        self.n_cross = max(1, min(f.n_shared * max(f.n_keys, 1), _MAX_CROSS))
        self.n_columns = self.cross_base + self.n_cross
        self.shared_sizes = np.diff(f.shared_offsets)
        self.key_sizes = np.diff(f.key_tokens_offsets)

    def _shared_pairs(self, rows_event: IntArray) -> tuple[IntArray, IntArray]:
        """(row index, shared token) for every shared token of each row's event."""
        sizes = self.shared_sizes[rows_event]
        row = np.repeat(np.arange(rows_event.shape[0], dtype=np.int64), sizes)
        starts = np.repeat(self.f.shared_offsets[rows_event], sizes)
        within = np.arange(row.shape[0], dtype=np.int64) - np.repeat(
            np.cumsum(sizes) - sizes, sizes
        )
        return row, self.f.shared[starts + within]

    def _action_pairs(self, keys: IntArray) -> tuple[IntArray, IntArray]:
        sizes = self.key_sizes[keys]
        row = np.repeat(np.arange(keys.shape[0], dtype=np.int64), sizes)
        starts = np.repeat(self.f.key_tokens_offsets[keys], sizes)
        within = np.arange(row.shape[0], dtype=np.int64) - np.repeat(
            np.cumsum(sizes) - sizes, sizes
        )
        return row, self.f.key_tokens[starts + within]

    def entries(self, rows_event: IntArray, keys: IntArray) -> tuple[IntArray, IntArray]:
        """(row, column) of every non-zero (all are 1) of the rows' design matrix."""
        n = rows_event.shape[0]
        s_row, s_tok = self._shared_pairs(rows_event)
        a_row, a_tok = self._action_pairs(keys)
        n_keys = max(self.f.n_keys, 1)
        cross = self.cross_base + (s_tok * n_keys + keys[s_row]) % self.n_cross
        rows = np.concatenate((np.arange(n, dtype=np.int64), s_row, a_row, s_row))
        cols = np.concatenate(
            (
                np.zeros(n, dtype=np.int64),
                self.shared_base + s_tok,
                self.action_base + a_tok,
                cross,
            )
        )
        return rows, cols


def _sigmoid(z: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)


def _fit(rows: IntArray, cols: IntArray, y: FloatArray, n_columns: int, steps: int) -> FloatArray:
    """Penalised logistic fit (fractional y in [0, 1]) by full-batch Adam; returns weights."""
    n = int(y.shape[0])
    w = np.zeros(n_columns, dtype=np.float64)
    mean = float(np.clip(y.mean(), 1e-4, 1.0 - 1e-4))
    w[0] = np.log(mean / (1.0 - mean))
    penalty = np.full(n_columns, 1.0 / (n * _PRIOR_VARIANCE))
    penalty[0] = 0.0
    m1 = np.zeros(n_columns)
    m2 = np.zeros(n_columns)
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for t in range(1, steps + 1):
        logit = np.asarray(np.bincount(rows, weights=w[cols], minlength=n), dtype=np.float64)
        resid = _sigmoid(logit) - y
        grad = np.bincount(cols, weights=resid[rows], minlength=n_columns) / n + penalty * w
        m1 = beta1 * m1 + (1.0 - beta1) * grad
        m2 = beta2 * m2 + (1.0 - beta2) * grad * grad
        step = _LEARNING_RATE * (m1 / (1.0 - beta1**t)) / (np.sqrt(m2 / (1.0 - beta2**t)) + eps)
        w -= step
    return w


def _predict(design: _Design, w: FloatArray, logged: LoggedEvents, events: IntArray) -> FloatArray:
    """Logits of every action of `events` (flat, in event order)."""
    offsets = logged.offsets
    parts: list[FloatArray] = []
    for start in range(0, events.shape[0], _PREDICT_CHUNK):
        chunk = events[start : start + _PREDICT_CHUNK]
        sizes = logged.n_actions[chunk]
        row_event = np.repeat(chunk, sizes)
        within = np.arange(row_event.shape[0], dtype=np.int64) - np.repeat(
            np.cumsum(sizes) - sizes, sizes
        )
        keys = design.f.action_key[np.repeat(offsets[chunk], sizes) + within]
        rows, cols = design.entries(row_event, keys)
        logits = np.bincount(rows, weights=w[cols], minlength=row_event.shape[0])
        parts.append(np.asarray(logits, dtype=np.float64))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)


def fit_cross_fitted(
    logged: LoggedEvents,
    features: EventFeatures,
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    max_train: int = DEFAULT_MAX_TRAIN,
) -> RewardModel:
    """Cross-fit the reward model on in-memory events and features (see module docstring)."""
    started = time.perf_counter()
    fold = assign_folds(logged.event_id, folds, seed)
    lo, hi = reward_range(logged.reward)
    span = hi - lo
    y = (logged.reward - lo) / span if span > 0 else np.zeros(logged.n)
    y = np.clip(y, 0.0, 1.0)
    design = _Design(features)
    offsets = logged.offsets
    logged_key = features.action_key[offsets[:-1] + logged.logged_action]
    predicted = np.full(int(offsets[-1]), lo, dtype=np.float64)
    rng = np.random.default_rng(seed)
    train_counts: list[int] = []
    for k in range(folds):
        members = np.flatnonzero(fold == k)
        train = np.flatnonzero(fold != k)
        if train.shape[0] > max_train:
            train = np.sort(rng.choice(train, size=max_train, replace=False))
        train_counts.append(int(train.shape[0]))
        if members.shape[0] == 0:
            continue
        if train.shape[0] == 0 or span <= 0:
            # Nothing to learn from (or a constant reward): the range's only value, or its mid.
            value = lo if span <= 0 else lo + 0.5 * span
            logits = None
        else:
            rows, cols = design.entries(train, logged_key[train])
            w = _fit(rows, cols, y[train], design.n_columns, steps)
            logits = _predict(design, w, logged, members)
        sizes = logged.n_actions[members]
        positions = np.repeat(offsets[members], sizes) + (
            np.arange(int(sizes.sum()), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        )
        if logits is None:
            predicted[positions] = value
        else:
            predicted[positions] = lo + span * _sigmoid(logits)
    logger.info(
        "reward model: %d folds on %d events, %d columns, %.2fs",
        folds,
        logged.n,
        design.n_columns,
        time.perf_counter() - started,
    )
    return RewardModel(
        event_id=logged.event_id,
        offsets=offsets,
        predicted_reward=np.clip(predicted, lo, hi),
        fold=fold,
        train_counts=tuple(train_counts),
        folds=folds,
        seed=seed,
        bounds=(lo, hi),
    )


def fit_reward_model(
    data_path: Path,
    vw_args: str = "",
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    steps: int = DEFAULT_STEPS,
    max_train: int = DEFAULT_MAX_TRAIN,
    logged: LoggedEvents | None = None,
    tmp_dir: Path | None = None,
) -> RewardModel:
    """Read a joined DSJSON file once and cross-fit the reward model on it.

    `vw_args`, `logged` and `tmp_dir` are accepted for callers of the earlier VW-based model
    and unused: the model builds its own features, reads the events with them in one pass and
    writes no temporary files.
    """
    del vw_args, logged, tmp_dir
    logged, features, _ = read_events_and_features(data_path)
    return fit_cross_fitted(
        logged, features, folds=folds, seed=seed, steps=steps, max_train=max_train
    )
