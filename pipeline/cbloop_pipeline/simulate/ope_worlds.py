"""Seeded off-policy-evaluation worlds with exactly known policy values.

Each world has categorical contexts (segment, device), a counter-like numeric feature that
does not affect the reward (0 to 3000; optionally also a "wild" timestamp-like feature that is
1e12 on one request in 50), a fixed list of actions with their own features, and Bernoulli
rewards with click probability

    p(x, a) = sigmoid(base + alpha_a + beta[segment, a] + gamma[device, a]).

The logging policy is an epsilon-softmax over a noisy copy of the truth, the target policy an
epsilon-softmax over a less noisy copy; both are known in closed form per context, so the
target's true value sum_x P(x) sum_a pi(a|x) p(x, a) is exact (contexts are uniform over
segment x device, and the numeric features do not enter p).

`write_world` writes the logged events as joined DSJSON (labels first, like the pipeline) and
returns the target policy's pmf on every event, so the real reader, reward model and
estimators run on it without a VW policy in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import orjson

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SEGMENTS = 12
DEVICES = 3
WILD_VALUE = 1e12
WILD_EVERY = 50
TIMESTAMP = "2026-11-22T12:00:00.000000Z"


@dataclass(frozen=True)
class OpeWorldSpec:
    """Shape of a world; `seed` chooses the effects and the events."""

    name: str
    n_actions: int
    n_events: int
    base_logit: float
    effect_sd: float
    logging_epsilon: float = 0.2
    logging_noise: float = 1.5
    target_epsilon: float = 0.05
    target_noise: float = 0.5
    temperature: float = 1.0
    wild: bool = False


SPARSE = OpeWorldSpec("sparse", n_actions=80, n_events=10_000, base_logit=-7.0, effect_sd=0.8)
DENSE = OpeWorldSpec("dense", n_actions=5, n_events=5_000, base_logit=-0.8, effect_sd=0.8)
WILD = OpeWorldSpec("wild", n_actions=10, n_events=5_000, base_logit=-1.0, effect_sd=0.8, wild=True)
WORLDS = {w.name: w for w in (SPARSE, DENSE, WILD)}


def _softmax_mix(scores: FloatArray, temperature: float, epsilon: float) -> FloatArray:
    z = scores / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    soft = e / e.sum(axis=-1, keepdims=True)
    return np.asarray((1.0 - epsilon) * soft + epsilon / scores.shape[-1], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class OpeWorld:
    """A drawn world: click probabilities and both policies per (segment, device, action)."""

    spec: OpeWorldSpec
    click: FloatArray  # [segment, device, action]
    logging: FloatArray  # mu, same shape
    target: FloatArray  # pi, same shape

    @property
    def true_value(self) -> float:
        """E_x sum_a pi(a|x) p(x, a), contexts uniform over segment x device."""
        return float((self.target * self.click).sum(axis=-1).mean())

    @property
    def logging_value(self) -> float:
        return float((self.logging * self.click).sum(axis=-1).mean())


def draw_world(spec: OpeWorldSpec, seed: int) -> OpeWorld:
    rng = np.random.default_rng([seed, 1])
    k = spec.n_actions
    alpha = rng.normal(0.0, spec.effect_sd, size=k)
    beta = rng.normal(0.0, spec.effect_sd, size=(SEGMENTS, k))
    gamma = rng.normal(0.0, spec.effect_sd / 2.0, size=(DEVICES, k))
    logit = spec.base_logit + alpha[None, None, :] + beta[:, None, :] + gamma[None, :, :]
    click = 1.0 / (1.0 + np.exp(-logit))
    truth_score = logit - spec.base_logit
    log_scores = truth_score + rng.normal(0.0, spec.logging_noise, size=truth_score.shape)
    tgt_scores = truth_score + rng.normal(0.0, spec.target_noise, size=truth_score.shape)
    return OpeWorld(
        spec=spec,
        click=click,
        logging=_softmax_mix(log_scores, spec.temperature, spec.logging_epsilon),
        target=_softmax_mix(tgt_scores, spec.temperature, spec.target_epsilon),
    )


@dataclass(frozen=True, eq=False)
class WrittenWorld:
    """Events written to `path`, with the target pmf on each (flat, aligned with `_multi`)."""

    world: OpeWorld
    path: Path
    target_pmf: FloatArray
    logged_action: IntArray

    @property
    def true_value(self) -> float:
        return self.world.true_value


def _multi(k: int) -> bytes:
    return orjson.dumps(
        [{"ActionId": {"id": f"a{j}"}, "item": {"cat": f"c{j % 8}"}} for j in range(k)]
    )


def write_world(
    spec: OpeWorldSpec, seed: int, path: Path, n_events: int | None = None
) -> WrittenWorld:
    """Draw the world for `seed`, log `n_events` (default spec.n_events) events to `path`."""
    world = draw_world(spec, seed)
    n = spec.n_events if n_events is None else n_events
    rng = np.random.default_rng([seed, 2])
    k = spec.n_actions
    seg = rng.integers(0, SEGMENTS, size=n)
    dev = rng.integers(0, DEVICES, size=n)
    visits = np.minimum(np.floor(rng.lognormal(4.0, 1.5, size=n)), 3000).astype(np.int64)
    mu = world.logging[seg, dev]
    cum = np.cumsum(mu, axis=1)
    u = rng.random(n)[:, None]
    chosen = np.minimum((u > cum).sum(axis=1), k - 1).astype(np.int64)
    p_click = world.click[seg, dev, chosen]
    reward = (rng.random(n) < p_click).astype(np.float64)
    wild = rng.random(n) < 1.0 / WILD_EVERY
    multi = _multi(k)
    with path.open("wb") as out:
        for i in range(n):
            a = int(chosen[i])
            probs = mu[i]
            order = [a, *(j for j in range(k) if j != a)]
            user: dict[str, object] = {"segment": f"s{seg[i]}", "visits": int(visits[i])}
            if spec.wild:
                user["ts"] = WILD_VALUE if wild[i] else float(visits[i] % 97)
            head = orjson.dumps(
                {
                    "_label_cost": -float(reward[i]) + 0.0,
                    "_label_probability": float(probs[a]),
                    "_label_Action": a + 1,
                    "_labelIndex": a,
                    "EventId": f"{spec.name}-{seed}-{i}",
                    "Timestamp": TIMESTAMP,
                    "Version": "1",
                    "a": [j + 1 for j in order],
                    "p": [float(probs[j]) for j in order],
                }
            )
            shared = orjson.dumps({"user": user, "device": {"os": f"d{dev[i]}"}})
            out.write(
                head[:-1] + b',"c":' + shared[:-1] + b',"_multi":' + multi + b"},"
                b'"model_id":"sim-logger"}\n'
            )
    return WrittenWorld(
        world=world,
        path=path,
        target_pmf=np.asarray(world.target[seg, dev].reshape(-1), dtype=np.float64),
        logged_action=chosen,
    )
