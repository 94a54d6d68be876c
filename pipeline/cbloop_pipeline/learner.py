"""One VW training pass in a child process, and the check that what it learned is finite.

VW is native code: input it cannot handle can kill its process outright (a decision whose `c`
was a string once segfaulted it). Training therefore runs in a child Python process
(`python -m cbloop_pipeline.learner`), so a crash is a failed training, reported with the
signal, and never takes the loop down. The child reports VW's counts as one JSON line on
stdout, plus whether the loss and every weight of the written model are finite: a huge
reward overflows VW's 32-bit floats, and a model with NaN or infinite weights must never be
registered as a parent (cbloop_pipeline.train refuses it).
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import vowpalwabbit

from cbloop.errors import TransientError

#: A readable-model weight line: "<index>:<value>[ <more values>]" (more with --save_resume).
_WEIGHT_LINE = re.compile(r"^\d+(?:\[\d+\])?:(.*)$")
_STDERR_KEPT = 2000


class LearnerFailed(TransientError):
    """The child process did not finish its pass (crash, VW error)."""


@dataclass(frozen=True)
class ChildReport:
    examples: float
    sum_loss: float
    seconds: float
    weights_finite: bool
    bad_weights: int


def run_learner(args: list[str], model: Path, *, timeout: float | None = None) -> ChildReport:
    """Run VW with `args` (which write `model`) in a child process and check the result."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "cbloop_pipeline.learner", json.dumps(args), str(model)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        tail = proc.stderr.strip()[-_STDERR_KEPT:]
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            raise LearnerFailed(f"VW crashed ({name}) while learning; {tail or 'no message'}")
        raise LearnerFailed(tail.splitlines()[-1] if tail else f"exit code {proc.returncode}")
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError) as exc:
        raise LearnerFailed(f"the learner printed no report: {proc.stdout[-200:]!r}") from exc
    return ChildReport(
        examples=float(report["examples"]),
        sum_loss=float(report["sum_loss"]),
        seconds=time.perf_counter() - started if report["seconds"] is None else report["seconds"],
        weights_finite=bool(report["weights_finite"]),
        bad_weights=int(report["bad_weights"]),
    )


def count_bad_weights(readable_model: Path) -> int:
    """Weight values in a VW readable model that are NaN or infinite."""
    bad = 0
    with readable_model.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            match = _WEIGHT_LINE.match(line.strip())
            if match is None:
                continue
            for token in match.group(1).split():
                try:
                    if not math.isfinite(float(token)):
                        bad += 1
                except ValueError:
                    continue
    return bad


def _child(args: list[str], model: Path) -> None:
    started = time.perf_counter()
    try:
        ws = vowpalwabbit.Workspace(arg_list=args)
    except RuntimeError as exc:  # pybind11 maps VW's exceptions to RuntimeError
        print(f"VW could not learn: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    examples = float(ws.get_weighted_examples())
    sum_loss = float(ws.get_sum_loss())
    ws.finish()  # writes -f
    seconds = time.perf_counter() - started
    readable = model.with_name(model.name + ".readable")
    checker = vowpalwabbit.Workspace(
        arg_list=["-i", str(model), "--quiet", "--readable_model", str(readable)]
    )
    checker.finish()
    bad = count_bad_weights(readable)
    readable.unlink(missing_ok=True)
    report = {
        "examples": examples,
        "sum_loss": sum_loss if math.isfinite(sum_loss) else str(sum_loss),
        "seconds": seconds,
        "weights_finite": bad == 0,
        "bad_weights": bad,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]), Path(sys.argv[2]))
