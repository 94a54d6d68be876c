"""VW learns from the joined export as is, and finds the best action planted in the log."""

from __future__ import annotations

import random

import orjson
import vowpalwabbit
from crafted_segments import EventLogFolder, Pipeline, at, decision, reward

DEVICES = ("ios", "android", "web")
BEST = {"ios": 2, "android": 0, "web": 1}  # the planted best action per device
ACTIONS = 3


def _predict_line(device: str) -> str:
    multi = [{"ActionId": {"id": f"a{k}"}} for k in range(ACTIONS)]
    return orjson.dumps({"a": [1], "c": {"user": {"device": device}, "_multi": multi}}).decode()


def test_vw_trains_on_the_export_and_learns_the_planted_best_action(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    rng = random.Random(3)
    decisions, outcomes = [], []
    for i in range(1500):
        device = rng.choice(DEVICES)
        chosen = rng.randrange(ACTIONS)  # a uniform logging policy
        event = f"e{i}"
        decisions.append(
            decision(
                event,
                i,
                chosen=chosen,
                n_actions=ACTIONS,
                p_chosen=1 / ACTIONS,
                sample_prob=rng.random(),
                context={"user": {"device": device}},
            )
        )
        if chosen == BEST[device]:
            outcomes.append(reward(event, i + 5, 1.0))  # the others default to 0.0
    event_log.decisions(*decisions)
    event_log.outcomes(*outcomes)
    wh.ingest()
    job = wh.join(as_of=at(10_000))
    assert job.joined == 1500 and job.train_events > 1000

    ws = vowpalwabbit.Workspace("--cb_explore_adf --dsjson --quiet -q uA --epsilon 0.05")
    try:
        for line in wh.lines(job.train_key):
            ws.learn(line)
        for device, best in BEST.items():
            pmf = ws.predict(_predict_line(device))
            assert max(range(ACTIONS), key=lambda k: pmf[k]) == best, (device, pmf)
    finally:
        ws.finish()


def test_the_export_labels_the_action_that_was_logged(
    wh: Pipeline, event_log: EventLogFolder
) -> None:
    # One event per action position: VW must be told the chosen action's place in _multi.
    event_log.decisions(*(decision(f"e{k}", 0, chosen=k, p_chosen=0.6) for k in range(ACTIONS)))
    event_log.outcomes(*(reward(f"e{k}", 1, float(k)) for k in range(ACTIONS)))
    wh.ingest()
    job = wh.join(as_of=at(3600))

    for obj in wh.exported(job.train_key):
        k = int(obj["EventId"][1:])
        assert obj["a"][0] == k + 1
        assert (obj["_label_Action"], obj["_labelIndex"]) == (k + 1, k)
        assert (obj["_label_cost"], obj["_label_probability"]) == (-float(k), 0.6)
