"""Training throughput against VW alone, and evaluation time, on 1M-event joined exports.

`cbloop train` is timed through the function the command runs (pipeline.learning
.train_command: parent choice, VW learning the file through its own parser, registry save,
warehouse mirror), on a joined DSJSON file given as DSJSON history. The floor is VW alone
learning the same file with the same arguments in the same run: one Workspace with `-d` and
`-f`, nothing else. Rounds alternate the two so that neither gets a warmer page cache or CPU,
and each side's best round counts. Target: cbloop reaches at least 0.9 of VW's examples/s.

Evaluation is timed through pipeline.evaluate.evaluate_candidate (what `cbloop evaluate` runs
once it has looked up the joins' eval splits): one read of 1M eval events, a 5-fold cross-fitted
reward model, native scoring of the candidate and the deployed model, the per-event Parquet
file and the summary.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import orjson
import vowpalwabbit
import yaml
from rich.console import Console
from rich.progress import Progress

logger = logging.getLogger(__name__)

EVENTS = 1_000_000
QUICK_EVENTS = 20_000
ROUNDS = 3
TARGET_RATIO = 0.9
EXPERIMENT = "default"
VW_ARGS = "--interactions :: -b 18"

_CITIES = tuple(f"city-{i}" for i in range(20))
_OS = ("ios", "android", "web")
_TOPICS = ("sports", "politics", "tech", "culture", "travel")
_ACTIONS = tuple(f"article-{j}" for j in range(len(_TOPICS)))
_EPSILON = 0.2


def _multi() -> bytes:
    actions = [
        {
            "item": {"topic": topic, "words": 300 + 91 * j, "fresh": j % 2 == 0},
            "ActionId": {"id": a},
        }
        for j, (topic, a) in enumerate(zip(_TOPICS, _ACTIONS, strict=True))
    ]
    return orjson.dumps(actions)


def _best(city: int, os_index: int) -> int:
    """The world's best article for a context (the logging policy knows it, imperfectly)."""
    return (city + 2 * os_index) % len(_ACTIONS)


def write_joined(path: Path, n: int, seed: int, progress: Progress | None = None) -> None:
    """`n` joined DSJSON lines (labels first) of an epsilon-greedy logging policy."""
    rng = random.Random(seed)
    k = len(_ACTIONS)
    multi = _multi()
    action_ids = orjson.dumps(list(_ACTIONS))
    task = progress.add_task(f"writing {path.name}", total=n) if progress else None
    with path.open("wb") as out:
        for i in range(n):
            city, os_index = rng.randrange(len(_CITIES)), rng.randrange(len(_OS))
            greedy = (_best(city, os_index) + (1 if rng.random() < 0.3 else 0)) % k
            pmf = [_EPSILON / k] * k
            pmf[greedy] += 1.0 - _EPSILON
            chosen = rng.choices(range(k), weights=pmf)[0]
            reward = (
                1.0 if rng.random() < (0.7 if chosen == _best(city, os_index) else 0.15) else 0.0
            )
            order = [chosen, *(j for j in range(k) if j != chosen)]
            head = orjson.dumps(
                {
                    "_label_cost": 0.0 - reward,
                    "_label_probability": pmf[chosen],
                    "_label_Action": chosen + 1,
                    "_labelIndex": chosen,
                    "EventId": f"bench-{seed}-{i}",
                    "Timestamp": "2026-11-22T12:00:00.000000Z",
                    "Version": "1",
                    "a": [j + 1 for j in order],
                    "p": [pmf[j] for j in order],
                }
            )
            shared = orjson.dumps(
                {
                    "user": {
                        "age": 18 + rng.randrange(60),
                        "city": _CITIES[city],
                        "premium": rng.random() < 0.2,
                        "visits": rng.randrange(100),
                    },
                    "device": {"os": _OS[os_index], "hour": rng.randrange(24)},
                }
            )
            tail = orjson.dumps(
                {"experiment": EXPERIMENT, "model_id": "bench-logger", "sample_prob": rng.random()}
            )
            out.write(
                head[:-1] + b',"c":' + shared[:-1] + b',"_multi":' + multi + b"},"
                b'"action_ids":' + action_ids + b"," + tail[1:] + b"\n"
            )
            if progress is not None and task is not None and i % 10_000 == 0:
                progress.update(task, completed=i)
    if progress is not None and task is not None:
        progress.update(task, completed=n)


def _settings(out: Path) -> Any:
    from cbloop.settings import load_settings

    config = out / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"root": str(out / "data")},
                "warehouse": {"path": str(out / "data" / "warehouse.duckdb")},
                "pipeline": {"lock_path": str(out / "data" / "pipeline.lock")},
                "logging": {"format": "text", "level": "WARNING"},
                "experiments": {EXPERIMENT: {"vw_args": VW_ARGS}},
            }
        )
    )
    return load_settings(config, env={})


def _vw_alone(vw_args: str, data: Path, model: Path) -> tuple[float, float]:
    from cbloop_pipeline.train import vw_learn_args

    started = time.perf_counter()
    ws = vowpalwabbit.Workspace(arg_list=vw_learn_args(vw_args, data, model, None))
    examples = float(ws.get_weighted_examples())
    ws.finish()
    return examples, time.perf_counter() - started


def _warm_cache(path: Path) -> None:
    with path.open("rb") as fh:
        while fh.read(1 << 24):
            pass


def run(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    from cbloop_pipeline.evaluate import EvalSplit, evaluate_candidate
    from cbloop_pipeline.learning import deploy_command, open_context, train_command

    console = Console()
    n = QUICK_EVENTS if quick else EVENTS
    rounds = ROUNDS
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(out_dir)
    vw_args = settings.experiment(EXPERIMENT).vw_arguments()
    train_file = out_dir / f"train-{n}.dsjson"
    eval_key = f"joined/{EXPERIMENT}/bench-{n}/eval.dsjson"
    eval_file = settings.storage.root / eval_key
    eval_file.parent.mkdir(parents=True, exist_ok=True)
    with Progress(console=console, transient=True) as progress:
        if not train_file.exists():
            write_joined(train_file, n, seed=1, progress=progress)
        if not eval_file.exists():
            write_joined(eval_file, n, seed=2, progress=progress)
    _warm_cache(train_file)

    vw_rates: list[float] = []
    cbloop_rates: list[float] = []
    model_ids: list[str] = []
    for r in range(rounds):
        with console.status(f"round {r + 1}/{rounds}: VW alone on {n:,} events"):
            examples, seconds = _vw_alone(vw_args, train_file, out_dir / "vw-alone.vw")
        vw_rates.append(examples / seconds)
        console.print(
            f"round {r + 1}: VW alone     {seconds:7.2f}s  {examples / seconds:12,.0f} ex/s"
        )
        with console.status(f"round {r + 1}/{rounds}: cbloop train on {n:,} events"):
            started = time.perf_counter()
            outcome = train_command(settings, EXPERIMENT, fresh=True, warm_start=train_file)
            seconds = time.perf_counter() - started
        if outcome.model is None:
            raise RuntimeError(f"cbloop train learned nothing: {outcome.reason}")
        model_ids.append(outcome.model.model_id)
        cbloop_rates.append(outcome.model.events_trained / seconds)
        console.print(
            f"round {r + 1}: cbloop train {seconds:7.2f}s  {cbloop_rates[-1]:12,.0f} ex/s"
        )
    vw_best, cbloop_best = max(vw_rates), max(cbloop_rates)
    ratio = cbloop_best / vw_best

    # The first model plays the deployed one, the last the candidate.
    deploy_command(settings, EXPERIMENT, model_id=model_ids[0], force=True)
    with console.status(f"evaluating on {n:,} eval events"), open_context(settings) as ctx:
        candidate = ctx.registry.metadata(EXPERIMENT, model_ids[-1])
        deployed = ctx.registry.metadata(EXPERIMENT, model_ids[0])
        started = time.perf_counter()
        record = evaluate_candidate(
            ctx.registry,
            EXPERIMENT,
            settings.experiment(EXPERIMENT),
            candidate,
            [EvalSplit(f"bench-{n}", eval_key)],
            deployed=deployed,
        )
        eval_seconds = time.perf_counter() - started

    console.print(
        f"train: cbloop {cbloop_best:,.0f} ex/s vs VW alone {vw_best:,.0f} ex/s: "
        f"ratio {ratio:.3f} (target >= {TARGET_RATIO})"
    )
    console.print(
        f"evaluate: {record['n_events']:,} eval events in {eval_seconds:.1f}s "
        f"({record['n_events'] / eval_seconds:,.0f} events/s)"
    )
    return {
        "events": n,
        "vw_args": vw_args,
        "vw_alone_examples_per_second": round(vw_best, 1),
        "cbloop_train_examples_per_second": round(cbloop_best, 1),
        "ratio": round(ratio, 4),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "rounds": {"vw_alone": vw_rates, "cbloop_train": cbloop_rates},
        "evaluate_events": record["n_events"],
        "evaluate_seconds": round(eval_seconds, 2),
        "evaluate_events_per_second": round(record["n_events"] / eval_seconds, 1),
        "evaluate_estimates": {
            role: (body or {}).get("estimates") for role, body in record["policies"].items()
        },
    }
