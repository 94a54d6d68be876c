"""`cbloop evaluate` on 1M eval events against one plain VW pass over the same file.

The evaluation is timed through pipeline.evaluate.evaluate_candidate (what `cbloop evaluate`
runs once it has looked up the joins' eval splits): one read of the events and their features,
the 2-fold cross-fitted reward model, native VW scoring of the candidate and the deployed model
(in parallel), every estimator, the per-event Parquet file and the summary. The floor is one
plain VW pass over the same file in the same run: the candidate model predicting every event
(`-t -i model -d eval.dsjson`, the experiment's arguments, no output), i.e. the least any
evaluation must do. Rounds alternate the two; each side's best round counts.
Target: evaluate takes at most 3x the VW pass.
"""

from __future__ import annotations

import logging
import os
import shlex
import time
from pathlib import Path
from typing import Any

import vowpalwabbit
from rich.console import Console
from rich.progress import Progress

from cbloop_cli.benchmarks.train import EXPERIMENT, _settings, _warm_cache, write_joined

logger = logging.getLogger(__name__)

EVENTS = 1_000_000
QUICK_EVENTS = 20_000
TRAIN_EVENTS = 50_000
ROUNDS = 2
TARGET_RATIO = 3.0


def _vw_pass(vw_args: str, model: Path, data: Path) -> float:
    started = time.perf_counter()
    args = [*shlex.split(vw_args), "--dsjson", "--quiet", "-t", "-i", str(model), "-d", str(data)]
    vowpalwabbit.Workspace(arg_list=args).finish()
    return time.perf_counter() - started


def run(out_dir: Path, quick: bool = False) -> dict[str, Any]:
    from cbloop_pipeline.evaluate import EvalSplit, evaluate_candidate
    from cbloop_pipeline.learning import deploy_command, open_context, train_command

    console = Console()
    n = QUICK_EVENTS if quick else EVENTS
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = _settings(out_dir)
    vw_args = settings.experiment(EXPERIMENT).vw_arguments()
    train_file = out_dir / f"train-{TRAIN_EVENTS}.dsjson"
    eval_key = f"joined/{EXPERIMENT}/bench-eval-{n}/eval.dsjson"
    eval_file = settings.storage.root / eval_key
    eval_file.parent.mkdir(parents=True, exist_ok=True)
    with Progress(console=console, transient=True) as progress:
        if not train_file.exists():
            write_joined(train_file, TRAIN_EVENTS, seed=1, progress=progress)
        if not eval_file.exists():
            write_joined(eval_file, n, seed=2, progress=progress)
    models = []
    for _ in range(2):
        outcome = train_command(settings, EXPERIMENT, fresh=True, warm_start=train_file)
        if outcome.model is None:
            raise RuntimeError(f"cbloop train learned nothing: {outcome.reason}")
        models.append(outcome.model.model_id)
    deploy_command(settings, EXPERIMENT, model_id=models[0], force=True)
    _warm_cache(eval_file)

    vw_times: list[float] = []
    eval_times: list[float] = []
    record: dict[str, Any] = {}
    with open_context(settings) as ctx:
        candidate = ctx.registry.metadata(EXPERIMENT, models[-1])
        deployed = ctx.registry.metadata(EXPERIMENT, models[0])
        model_path = ctx.registry.fetch(EXPERIMENT, candidate.model_id, out_dir)
        for r in range(ROUNDS):
            with console.status(f"round {r + 1}/{ROUNDS}: one VW pass over {n:,} events"):
                vw_times.append(_vw_pass(vw_args, model_path, eval_file))
            console.print(f"round {r + 1}: VW pass        {vw_times[-1]:7.2f}s")
            with console.status(f"round {r + 1}/{ROUNDS}: cbloop evaluate on {n:,} events"):
                started = time.perf_counter()
                record = evaluate_candidate(
                    ctx.registry,
                    EXPERIMENT,
                    settings.experiment(EXPERIMENT),
                    candidate,
                    [EvalSplit(f"bench-eval-{n}", eval_key)],
                    deployed=deployed,
                )
                eval_times.append(time.perf_counter() - started)
            console.print(f"round {r + 1}: cbloop evaluate {eval_times[-1]:7.2f}s")
    vw_best, eval_best = min(vw_times), max(min(eval_times), 1e-9)
    ratio = eval_best / vw_best
    load = os.getloadavg()
    console.print(
        f"evaluate: {record['n_events']:,} eval events in {eval_best:.1f}s "
        f"({record['n_events'] / eval_best:,.0f} events/s) vs one VW pass {vw_best:.1f}s: "
        f"ratio {ratio:.2f} (target <= {TARGET_RATIO:g}); load average {load[0]:.1f}"
    )
    return {
        "events": n,
        "vw_args": vw_args,
        "vw_pass_seconds": round(vw_best, 2),
        "evaluate_seconds": round(eval_best, 2),
        "evaluate_events_per_second": round(record["n_events"] / eval_best, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "rounds": {"vw_pass": vw_times, "evaluate": eval_times},
        "load_average": [round(x, 2) for x in load],
        "baseline": record.get("baseline"),
        "estimates": {
            role: (body or {}).get("estimates") for role, body in record["policies"].items()
        },
    }
