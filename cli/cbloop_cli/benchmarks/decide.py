"""`cbloop decide` throughput against VW scoring the same examples alone.

cbloop is timed through `run_batch`, what the command runs: reading the JSON-lines file,
validating each request, encoding, VW's pmf, the seeded draw, the decision line written to the
event log, and the answers written back in input order, on every core. The floor is VW alone
predicting the same examples, already encoded as DSJSON lines, in one process through the
cheapest calls pylibvw offers (no validation, no logging, no output). Target: at least 20,000
decisions/s for 5 actions on this 2-core machine.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from cbloop.encoding import build_vw_context, encode_context, predict_line
from cbloop.registry import ModelRegistry
from cbloop.settings import Settings, load_settings
from cbloop.storage import open_store
from cbloop.vw import open_workspace
from cbloop_service.batch import BatchOptions, run_batch
from cbloop_service.policy import predict_pmf

logger = logging.getLogger(__name__)

REQUESTS = 200_000
QUICK_REQUESTS = 20_000
TARGET_RATE = 20_000.0
_TOPICS = ("sports", "politics", "tech", "culture", "travel")


def _requests(path: Path, n: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    sample: list[dict[str, Any]] = []
    with path.open("wb") as out:
        for i in range(n):
            body = {
                "event_id": f"bench-{i}",
                "context": {
                    "user": {
                        "age": 18 + rng.randrange(60),
                        "city": f"city-{rng.randrange(20)}",
                        "premium": rng.random() < 0.2,
                    },
                    "device": {"os": rng.choice(("ios", "android", "web"))},
                },
                "actions": [
                    {"id": f"article-{j}", "features": {"item": {"topic": t, "words": 300 + j}}}
                    for j, t in enumerate(_TOPICS)
                ],
            }
            out.write(orjson.dumps(body) + b"\n")
            if i < 20_000:
                sample.append(body)
    return sample


def _settings(out: Path) -> Settings:
    config = out / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {"root": str(out / "data")},
                "warehouse": {"path": str(out / "data" / "warehouse.duckdb")},
                "pipeline": {"lock_path": str(out / "data" / "pipeline.lock")},
                "logging": {"level": "WARNING"},
            }
        )
    )
    return load_settings(config, env={})


def _vw_alone(settings: Settings, sample: list[dict[str, Any]], n: int) -> float:
    """Predictions per second of VW alone on pre-encoded lines, cycling through `sample`."""
    lines = [
        predict_line(
            encode_context(
                build_vw_context(
                    body["context"], [(a["id"], a["features"]) for a in body["actions"]]
                )
            )
        )
        for body in sample
    ]
    workspace = open_workspace(settings.experiment("default").vw_arguments())
    try:
        start = time.perf_counter()
        for i in range(n):
            predict_pmf(workspace, lines[i % len(lines)])
        return n / (time.perf_counter() - start)
    finally:
        workspace.finish()


def run(out: Path, quick: bool = False) -> dict[str, Any]:
    n = QUICK_REQUESTS if quick else REQUESTS
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(out)
    ModelRegistry(open_store(settings.storage)).ensure_initial_model(
        "default", settings.experiment("default")
    )
    source = out / "requests.jsonl"
    sample = _requests(source, n, seed=1)
    workers = os.cpu_count() or 1

    vw_rate = _vw_alone(settings, sample, n)
    with tempfile.TemporaryDirectory() as scratch, (out / "answers.jsonl").open("wb") as sink:
        start = time.perf_counter()
        summary = run_batch(
            settings,
            BatchOptions(experiment="default", workers=workers),
            source,
            sink,
            scratch=Path(scratch),
        )
        seconds = time.perf_counter() - start
    rate = summary.decided / seconds
    result = {
        "requests": n,
        "workers": workers,
        "decide_per_s": round(rate),
        "vw_alone_one_core_per_s": round(vw_rate),
        "ratio_vs_vw_one_core": round(rate / vw_rate, 3),
        "ratio_vs_vw_all_cores": round(rate / (vw_rate * workers), 3),
        "target_per_s": TARGET_RATE,
        "meets_target": rate >= TARGET_RATE,
    }
    print_result(result)
    return result


def print_result(result: dict[str, Any]) -> None:
    from rich.console import Console

    Console().print(
        f"decide: {result['decide_per_s']:,}/s on {result['workers']} processes "
        f"(logged, answers written); VW alone {result['vw_alone_one_core_per_s']:,}/s "
        f"on one core; ratio {result['ratio_vs_vw_one_core']} "
        f"({result['ratio_vs_vw_all_cores']} of VW on every core); "
        f"target {result['target_per_s']:,.0f}/s: "
        f"{'met' if result['meets_target'] else 'NOT met'}"
    )
