"""A seeded world whose reward needs a context x action-feature cross, logged the way the
service logs and joined by the real pipeline (shared by tests/pipeline/tuning and
tests/cli/test_tuning_cli.py).

Ten user segments (`user.seg`), five actions per event with fresh ids every event and one
item kind each (`item.kind`, k0..k4, shuffled). Kind `seg % 5` pays with probability HIGH,
the others LOW. Because ids never repeat and every kind is best for two segments out of
ten, neither `ActionId` nor `item.kind` alone, nor `user x ActionId` (`--interactions :A`),
can tell the good action; only the `user x item` cross (`-q ui`) can, and then earns HIGH
against (HIGH + 4 LOW) / 5 for the uniform logger.

Planted for feature evaluation: namespace `noise` (a random number `z`, an ID-like
`session`, a constant `version`) and `nuisance` (`w`, three random values), which share
VW's first character `n` and carry no signal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cbloop.clock import format_ts
from cbloop.encoding import build_vw_context, decision_line, encode_context, outcome_line
from cbloop.eventlog.layout import segment_key
from cbloop.sampling import split_draw
from cbloop.settings import ExperimentSettings, Settings
from cbloop.storage import ObjectStore, open_store
from cbloop_pipeline.ingest import ingest
from cbloop_pipeline.join import run_join
from cbloop_pipeline.join_catalog import FinishedJoin
from cbloop_pipeline.warehouse import connect

SEGMENTS = 10
KINDS = 5
HIGH = 0.85
LOW = 0.15
UNIFORM_VALUE = (HIGH + (KINDS - 1) * LOW) / KINDS

#: The experiment's settings in these tests: joinable at once (events are 30 minutes old).
EXPERIMENT: dict[str, object] = {
    "vw_args": "--interactions :A -b 18",
    "reward": {"wait_seconds": 60, "backward_seconds": 3600},
    "promotion": {"estimator": "dr", "min_events": 10},
}


def write_world(root: Path, n: int, *, seed: int) -> None:
    """`n` uniform-policy decisions and their rewards as closed segments under `root`."""
    rng = random.Random(seed)
    start = datetime.now(UTC) - timedelta(minutes=30)
    decisions: list[bytes] = []
    outcomes: list[bytes] = []
    for i in range(n):
        segment = rng.randrange(SEGMENTS)
        kinds = list(range(KINDS))
        rng.shuffle(kinds)
        event_id = f"w{seed}-e{i:06d}"
        ids = [f"it{seed}-{i}-{j}" for j in range(KINDS)]
        context = {
            "user": {"seg": f"s{segment}"},
            "noise": {"z": round(rng.random(), 4), "session": f"sess-{i}", "version": "v1"},
            "nuisance": {"w": rng.choice(["x", "y", "z"])},
        }
        actions = [(ids[j], {"item": {"kind": f"k{kinds[j]}"}}) for j in range(KINDS)]
        chosen = rng.randrange(KINDS)
        moment = start + timedelta(milliseconds=10 * i)
        c = build_vw_context(context, actions)
        decisions.append(
            decision_line(
                event_id=event_id,
                ts=format_ts(moment),
                order=[chosen, *(j for j in range(KINDS) if j != chosen)],
                probabilities=[1.0 / KINDS] * KINDS,
                c_json=encode_context(c),
                experiment="default",
                model_id="logger",
                action_ids=ids,
                sample_prob=split_draw(event_id),
                deferred=False,
            )
        )
        good = kinds[chosen] == segment % KINDS
        if rng.random() < (HIGH if good else LOW):
            outcomes.append(
                outcome_line(
                    event_id=event_id,
                    ts=format_ts(moment + timedelta(seconds=1)),
                    kind="reward",
                    value=1.0,
                )
            )
    opened = start.timestamp()
    for kind, lines in (("decisions", decisions), ("outcomes", outcomes)):
        path = root / segment_key(kind, opened, f"tune{seed}", 1)  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(lines))


def log_and_join(settings: Settings, n: int, *, seed: int) -> None:
    """Write the world's events and run the real ingest and join over them."""
    write_world(settings.storage.root, n, seed=seed)
    store = open_store(settings.storage)
    con = connect(settings.warehouse)
    try:
        ingest(con, store)
        run_join(con, store, "default", settings.experiment("default"))
    finally:
        con.close()


@dataclass(frozen=True)
class World:
    """A logged and joined world: its settings, store and finished joins."""

    settings: Settings
    store: ObjectStore
    joins: list[FinishedJoin]

    @property
    def experiment(self) -> ExperimentSettings:
        return self.settings.experiment("default")
