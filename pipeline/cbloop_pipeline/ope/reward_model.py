"""Cross-fitted direct-method reward model for the DR estimator.

Events are split into K folds by a keyed hash of their event id (deterministic for a given
seed, independent of file order). For each fold k a VW regressor is trained on the other
folds' events and predicts the reward of every action of fold k's events, so no event is
ever scored by a model that saw it. This keeps DR's per-event terms independent and its
variance estimate honest (Chernozhukov et al. 2018, "Double/debiased machine learning";
Dudik, Langford & Li 2011).

Why VW `--cb_adf --cb_type mtr`:
  * it reads the same joined DSJSON with VW's native parser and builds features exactly as
    the policy does (shared namespaces + each `_multi` action, same interactions and hash
    bits), so there is no second feature encoding to keep in sync;
  * "mtr" trains one regressor of the observed cost on the features of the logged action
    only, weighted by 1/_label_probability, and at test time scores every action; with
    `--rank_all` the `-p` file holds `action:predicted_cost` for all actions. The importance
    weight makes the fit target the cost averaged over actions uniformly instead of the
    logging distribution, which helps exactly the rarely-logged actions a new policy prefers.
  * `--cb_type dm` is NOT a per-action regression in VW's cb_adf: it also regresses every
    unchosen action towards cost 0 (VW's gen_cs_example_dm), which shrinks the estimates
    (measured on VW 9.11.9: a constant cost of -1 is predicted as about -0.3).
DR stays unbiased whatever the reward model's quality (given correct propensities); a better
model only narrows the interval.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cbloop.errors import InvalidInput
from cbloop.vwargs import feature_args
from cbloop_pipeline.ope.logged import (
    FloatArray,
    IntArray,
    LoggedEvents,
    ObjectArray,
    read_logged_events,
)
from cbloop_pipeline.ope.vw_io import PredictionMismatch, parse_action_values, run_vw

logger = logging.getLogger(__name__)

DEFAULT_FOLDS = 5


class RewardModelMismatch(InvalidInput, ValueError):
    """A reward model fitted on other events than the ones being evaluated."""


def reward_model_args(vw_args: str) -> list[str]:
    """The flags of `vw_args` that carry over to the reward regressor.

    Feature and optimiser flags do; reduction, exploration, cb_type, loss and clipping belong to
    the policy, not to a squared-loss reward regression.
    """
    return feature_args(vw_args)


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
        predicted_reward: r_hat(x_i, a) for every `_multi` action a, flat.
        fold: each event's fold.
        train_counts: events each fold's regressor was trained on (= n - fold size).
        folds, seed: the cross-fitting set-up.
        vw_args: the regressor's VW arguments.
    """

    event_id: ObjectArray
    offsets: IntArray
    predicted_reward: FloatArray
    fold: IntArray
    train_counts: tuple[int, ...]
    folds: int
    seed: int
    vw_args: tuple[str, ...]

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


def _split_for_fold(data_path: Path, fold: IntArray, k: int, train: Path, test: Path) -> int:
    """Write fold k's events to `test` and the others to `train`, keeping file order."""
    i = 0
    with data_path.open("rb") as src, train.open("wb") as tr, test.open("wb") as te:
        for raw in src:
            # Blank lines are skipped exactly as read_logged_events and VW skip them, so
            # event i here is event i there.
            if not raw.strip():
                continue
            line = raw if raw.endswith(b"\n") else raw + b"\n"
            (te if fold[i] == k else tr).write(line)
            i += 1
    return i


def _fit_fold(
    k: int,
    *,
    data_path: Path,
    fold: IntArray,
    regressor: list[str],
    logged: LoggedEvents,
    members: IntArray,
    workdir: Path,
) -> FloatArray:
    """Train on every fold but k, return predicted costs of fold k's events (flat)."""
    workdir.mkdir()
    train, test = workdir / "train.dsjson", workdir / "test.dsjson"
    model, preds = workdir / "model.vw", workdir / "pred.txt"
    seen = _split_for_fold(data_path, fold, k, train, test)
    if seen != logged.n:
        raise RewardModelMismatch(f"{data_path} changed while fitting the reward model")
    n_train = logged.n - int(members.shape[0])
    if n_train == 0:
        logger.warning("reward model fold %d has no training events; predicting 0", k)
        return np.zeros(int(logged.n_actions[members].sum()), dtype=np.float64)
    # --no_predict skips mtr's prediction pass during learning; nothing reads it.
    learn = ["--no_predict", "--dsjson", "--quiet", "-d", str(train), "-f", str(model)]
    run_vw([*regressor, *learn])
    # --rank_all makes cb_adf print every action's score, not only the best action.
    predict = ["--cb_adf", "--rank_all", "--dsjson", "-t", "--quiet", "-i", str(model)]
    run_vw([*predict, "-d", str(test), "-p", str(preds)])
    try:
        costs = parse_action_values(preds.read_text(), logged.n_actions[members])
    except PredictionMismatch as exc:
        raise RewardModelMismatch(f"reward model fold {k}: {exc}") from exc
    # Fold files are as large as the data; drop them as soon as the fold is done.
    for path in (train, test, model, preds):
        path.unlink()
    logger.info("reward model fold %d: trained on %d events, scored %d", k, n_train, len(members))
    return costs


def fit_reward_model(
    data_path: Path,
    vw_args: str = "",
    *,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    logged: LoggedEvents | None = None,
    extra_args: str = "",
    workers: int | None = None,
    tmp_dir: Path | None = None,
) -> RewardModel:
    """Cross-fit a reward model on a joined DSJSON file.

    Args:
        data_path: joined DSJSON (labels first).
        vw_args: the experiment's VW arguments; only feature/optimiser flags are used
            (`reward_model_args`).
        folds: number of cross-fitting folds (>= 2).
        seed: keys the fold hash; same seed and ids give the same folds.
        logged: the file's logged events if already read.
        extra_args: additional VW flags for the regressor (e.g. "--l2 1e-6").
        workers: folds fitted at once (threads; pyvw releases the GIL while VW runs).
            Default: min(folds, CPU count). Each running fold holds a copy of the data on
            disk. The result does not depend on it: every fold is its own VW run.
        tmp_dir: where the temporary fold files and models go (default: system temp).
    """
    if logged is None:
        logged = read_logged_events(data_path)
    fold = assign_folds(logged.event_id, folds, seed)
    regressor = [
        "--cb_adf",
        "--cb_type",
        "mtr",
        *reward_model_args(vw_args),
        *shlex.split(extra_args),
    ]
    offsets = logged.offsets
    members_of = [np.flatnonzero(fold == k) for k in range(folds)]
    train_counts = tuple(logged.n - int(m.shape[0]) for m in members_of)
    predicted = np.zeros(int(offsets[-1]), dtype=np.float64)
    n_workers = max(1, workers if workers is not None else min(folds, os.cpu_count() or 1))
    with (
        tempfile.TemporaryDirectory(prefix="cbloop-ope-rm-", dir=tmp_dir) as tmp_name,
        ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="ope-rm") as pool,
    ):
        tmp = Path(tmp_name)
        futures = {
            k: pool.submit(
                _fit_fold,
                k,
                data_path=data_path,
                fold=fold,
                regressor=regressor,
                logged=logged,
                members=members,
                workdir=tmp / f"fold{k}",
            )
            for k, members in enumerate(members_of)
            if members.shape[0] > 0
        }
        try:
            for k, future in futures.items():
                costs = future.result()
                # Scatter the fold's flat predictions back to its members' slots.
                members = members_of[k]
                sizes = logged.n_actions[members]
                local_starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
                positions = np.repeat(offsets[members] - local_starts, sizes)
                predicted[positions + np.arange(int(sizes.sum()))] = -costs
        finally:
            # After a failed fold, folds not yet started are pointless work.
            for future in futures.values():
                future.cancel()
    return RewardModel(
        event_id=logged.event_id,
        offsets=offsets,
        predicted_reward=predicted,
        fold=fold,
        train_counts=train_counts,
        folds=folds,
        seed=seed,
        vw_args=tuple(regressor),
    )
