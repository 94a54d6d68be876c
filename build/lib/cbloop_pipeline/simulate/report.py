"""A simulation's output files: summary.json, interactions.csv, summary.md and two plots."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import matplotlib

# No display on servers and CI; must be chosen before pyplot is imported.
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import orjson

from cbloop_pipeline.simulate.results import Interaction, LoopRecord

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
SUMMARY_MD_FILE = "summary.md"
INTERACTIONS_FILE = "interactions.csv"
REWARD_PLOT = "reward_per_loop.png"
OPE_PLOT = "ope_vs_realized.png"


def write_summary(out: Path, summary: Mapping[str, Any]) -> Path:
    path = out / SUMMARY_FILE
    path.write_bytes(
        orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n"
    )
    return path


def write_interactions(out: Path, interactions: Sequence[Interaction]) -> Path:
    path = out / INTERACTIONS_FILE
    names = [f.name for f in fields(Interaction)]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        for row in interactions:
            writer.writerow(asdict(row))
    return path


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def loop_rows(loops: Sequence[LoopRecord]) -> list[list[str]]:
    """The per-loop table, as text cells (shared by the console and the markdown summary)."""
    rows = []
    for r in loops:
        if r.ope is None:
            ope = "n/a"
        elif r.ope.ci_low is None or r.ope.ci_high is None:
            ope = f"{r.ope.value:.3f}"
        else:
            ope = f"{r.ope.value:.3f} [{r.ope.ci_low:.3f}, {r.ope.ci_high:.3f}]"
        rows.append(
            [
                str(r.loop),
                r.model_id,
                _fmt(r.mean_reward),
                _fmt(r.online_vw),
                ope,
                _yes_no(r.covered),
                _yes_no(r.consistent),
            ]
        )
    return rows


def _yes_no(flag: bool | None) -> str:
    return "n/a" if flag is None else ("yes" if flag else "no")


LOOP_HEADER = [
    "loop",
    "served by",
    "reward",
    "online VW",
    "OPE estimate [95% CI]",
    "CI covers reward",
    "within CI + round noise",
]


def _share(count: int, of: int, share: float | None) -> str:
    return "n/a" if share is None else f"{count}/{of} loops ({share:.0%})"


def totals_rows(totals: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [
        ("system, mean reward over the run", _fmt(totals["system_mean_reward"])),
        (
            f"system, mean reward over the last {totals['last_loops']} loops",
            _fmt(totals["last_loops_mean_reward"]),
        ),
        ("online VW in-process (no delay), same stream", _fmt(totals["online_vw_mean_reward"])),
        ("system / online VW", _fmt(totals["system_vs_online"])),
        ("uniform random (expected)", _fmt(totals["uniform"])),
        (f"best single action in hindsight ({totals['best_action']})", _fmt(totals["best_fixed"])),
        ("oracle (expected)", _fmt(totals["oracle"])),
        (
            "OPE interval covers the realized reward",
            _share(totals["ope_covered"], totals["ope_loops"], totals["ope_coverage"]),
        ),
        (
            "realized reward within the OPE interval widened by the round's sampling noise",
            _share(totals["ope_consistent"], totals["ope_loops"], totals["ope_consistency"]),
        ),
    ]


def markdown(loops: Sequence[LoopRecord], summary: Mapping[str, Any]) -> str:
    lines = [
        "| " + " | ".join(LOOP_HEADER) + " |",
        "|" + "|".join("---" if i == 1 else "---:" for i in range(len(LOOP_HEADER))) + "|",
    ]
    lines += ["| " + " | ".join(cells) + " |" for cells in loop_rows(loops)]
    lines += ["", "| total | value |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in totals_rows(summary["totals"])]
    lines.append(f"| wall time | {summary['wall_seconds']:.1f} s |")
    return "\n".join(lines) + "\n"


def write_markdown(out: Path, loops: Sequence[LoopRecord], summary: Mapping[str, Any]) -> Path:
    path = out / SUMMARY_MD_FILE
    path.write_text(markdown(loops, summary), encoding="utf-8")
    return path


def _legend_below(ax: Any) -> None:
    # Under the axes: inside, some line would always be hidden behind it.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, fontsize="small")


def plot_reward_per_loop(out: Path, loops: Sequence[LoopRecord], title: str) -> Path:
    path = out / REWARD_PLOT
    x = [r.loop for r in loops]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        ax.plot(x, [r.mean_reward for r in loops], "o-", lw=2, label="cbloop (service + pipeline)")
        ax.plot(x, [r.online_vw for r in loops], "s--", label="VW online in-process (no delay)")
        ax.plot(x, [r.oracle for r in loops], ":", color="black", label="oracle")
        ax.plot(x, [r.best_fixed for r in loops], "-.", color="gray", label="best single action")
        ax.plot(x, [r.uniform for r in loops], ":", color="tab:red", label="uniform random")
        ax.set_xlabel("loop")
        ax.set_ylabel("mean reward")
        ax.set_title(title)
        ax.set_xticks(x)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        _legend_below(ax)
        fig.tight_layout()
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_ope_vs_realized(out: Path, loops: Sequence[LoopRecord], title: str) -> Path:
    """Each round's realized reward next to the OPE estimate of the model that served it."""
    path = out / OPE_PLOT
    estimated = [(r, r.ope) for r in loops if r.ope is not None]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        ax.plot(
            [r.loop for r in loops], [r.mean_reward for r in loops], "o", label="realized reward"
        )
        missed = [r for r in loops if r.covered is False]
        if missed:
            ax.plot(
                [r.loop for r in missed],
                [r.mean_reward for r in missed],
                "x",
                color="tab:red",
                markersize=10,
                label="realized reward outside the interval",
            )
        banded = [(r, e, r.prediction_interval) for r, e in estimated if r.prediction_interval]
        if banded:
            ax.errorbar(
                [r.loop + 0.15 for r, _, _ in banded],
                [e.value for _, e, _ in banded],
                yerr=[
                    [e.value - band[0] for _, e, band in banded],
                    [band[1] - e.value for _, e, band in banded],
                ],
                fmt="none",
                ecolor="tab:orange",
                alpha=0.3,
                elinewidth=6,
                label="interval widened by the round's sampling noise",
            )
        if estimated:
            ax.errorbar(
                [r.loop + 0.15 for r, _ in estimated],
                [e.value for _, e in estimated],
                yerr=[
                    [
                        e.value - (e.ci_low if e.ci_low is not None else e.value)
                        for _, e in estimated
                    ],
                    [
                        (e.ci_high if e.ci_high is not None else e.value) - e.value
                        for _, e in estimated
                    ],
                ],
                fmt="s",
                capsize=3,
                color="tab:orange",
                label=f"{estimated[0][1].estimator.upper()} estimate, "
                f"{estimated[0][1].confidence:.0%} interval",
            )
        ax.set_xlabel("loop (served by the model deployed before it)")
        ax.set_ylabel("mean reward")
        ax.set_title(title)
        ax.set_xticks([r.loop for r in loops])
        ax.grid(alpha=0.3)
        _legend_below(ax)
        fig.tight_layout()
        fig.savefig(path, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
