"""Baselines on the simulation's own stream: uniform, best fixed action, oracle, online VW.

Uniform, best-fixed and oracle are exact expectations from the world's expected rewards.
The online learner is VW in this process with the experiment's own arguments, learning
from each interaction right after it (predict, sample, learn the chosen action's reward):
what the system would earn with no logging, joining or deployment delay.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cbloop.encoding import predict_line
from cbloop.sampling import choose, normalize_pmf
from cbloop.vw import open_workspace
from cbloop_pipeline.simulate.dsjson import labelled_line
from cbloop_pipeline.simulate.worlds import World

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
ONLINE_MODEL = "online-vw"


@dataclass(frozen=True)
class ExpectedBaselines:
    """Per-interaction expected reward of each reference policy, over positions `ts`."""

    uniform: FloatArray
    best_fixed: FloatArray
    oracle: FloatArray
    best_action: str


def expected_baselines(world: World, ts: Sequence[int]) -> ExpectedBaselines:
    """Uniform, best single action in hindsight (over exactly `ts`) and oracle."""
    if not ts:
        empty = np.zeros(0, dtype=np.float64)
        return ExpectedBaselines(empty, empty, empty, world.action_ids[0])
    table = np.vstack([world.expected_rewards(t) for t in ts])
    best = int(np.argmax(table.sum(axis=0)))
    return ExpectedBaselines(
        uniform=table.mean(axis=1),
        best_fixed=table[:, best].copy(),
        oracle=table.max(axis=1),
        best_action=world.action_ids[best],
    )


@dataclass(frozen=True)
class OnlineResult:
    """What the in-process online learner chose and earned at each position of `ts`."""

    actions: tuple[str, ...]
    probabilities: FloatArray
    rewards: FloatArray


class OnlineLearner:
    """VW with the experiment's arguments, updated after every interaction.

    It starts from the same warm-start history the system's first model was trained on,
    and samples with the service's own event-id-seeded draw, so for an equal pmf it makes
    the same choice the service would.
    """

    def __init__(self, vw_args: str, experiment: str) -> None:
        self.vw_args = vw_args
        self.experiment = experiment
        self._ws = open_workspace(vw_args)

    @property
    def examples_learned(self) -> int:
        return int(self._ws.get_weighted_examples())

    def warm_start(self, lines: Sequence[str]) -> None:
        for line in lines:
            self._ws.learn(line)

    def step(self, world: World, t: int, event_id: str) -> tuple[int, float, float]:
        """Predict, sample, observe the reward, learn; returns (action, probability, reward)."""
        c_json = world.c_json(t)
        raw = self._ws.predict(predict_line(c_json))
        pmf = normalize_pmf(raw, len(world.actions))
        chosen = choose(event_id, pmf)
        reward = world.reward(t, chosen)
        self._ws.learn(
            labelled_line(
                event_id=event_id,
                c_json=c_json,
                action_ids=world.action_ids,
                pmf=pmf,
                chosen=chosen,
                reward=reward,
                experiment=self.experiment,
                model_id=ONLINE_MODEL,
            )
        )
        return chosen, pmf[chosen], reward

    def run(self, world: World, ts: Sequence[int], event_ids: Sequence[str]) -> OnlineResult:
        actions: list[str] = []
        probabilities = np.empty(len(ts), dtype=np.float64)
        rewards = np.empty(len(ts), dtype=np.float64)
        for i, (t, event_id) in enumerate(zip(ts, event_ids, strict=True)):
            chosen, probability, reward = self.step(world, t, event_id)
            actions.append(world.action_ids[chosen])
            probabilities[i] = probability
            rewards[i] = reward
        return OnlineResult(tuple(actions), probabilities, rewards)

    def close(self) -> None:
        self._ws.finish()


def online_vw(
    world: World,
    vw_args: str,
    *,
    experiment: str,
    warm_start: Sequence[str],
    ts: Sequence[int],
    event_ids: Sequence[str],
) -> OnlineResult:
    """The online learner's run over `ts` (one learner, warm-started, then step by step)."""
    learner = OnlineLearner(vw_args, experiment)
    try:
        learner.warm_start(warm_start)
        return learner.run(world, ts, event_ids)
    finally:
        learner.close()
