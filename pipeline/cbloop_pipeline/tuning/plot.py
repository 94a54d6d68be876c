"""PNG charts of a search (one row per candidate) and of a feature evaluation (one row per
namespace), each point with its interval."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers

import matplotlib.pyplot as plt

from cbloop_pipeline.tuning.features import FeatureReport
from cbloop_pipeline.tuning.search import SearchResult


def _rows(
    labels: list[str], points: list[tuple[float, float, float]], colors: list[str]
) -> tuple[list[str], list[tuple[float, float, float]], list[str]]:
    keep = [i for i, (v, _, _) in enumerate(points) if math.isfinite(v)]
    return [labels[i] for i in keep], [points[i] for i in keep], [colors[i] for i in keep]


def _draw(
    out: Path,
    labels: list[str],
    points: list[tuple[float, float, float]],
    colors: list[str],
    *,
    xlabel: str,
    title: str,
    zero_line: bool = False,
    reference: float | None = None,
) -> None:
    labels, points, colors = _rows(labels, points, colors)
    # Room for the longest label beside a plot area of about 5 inches.
    width = 5.0 + 0.07 * max((len(label) for label in labels), default=0)
    fig, ax = plt.subplots(figsize=(width, 0.4 * len(labels) + 1.6))
    for y, ((value, ci_low, ci_high), color) in enumerate(zip(points, colors, strict=True)):
        low = ci_low if math.isfinite(ci_low) else value
        high = ci_high if math.isfinite(ci_high) else value
        ax.errorbar(value, y, xerr=[[value - low], [high - value]], fmt="o", color=color, capsize=4)
    if zero_line:
        ax.axvline(0.0, color="black", linewidth=0.8)
    if reference is not None and math.isfinite(reference):
        ax.axvline(reference, color="tab:orange", linestyle="--", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_search(result: SearchResult, out: Path) -> None:
    """Candidates in rank order; the current settings in orange, with a dashed line at its
    estimate (the bar a winner's lower bound must clear)."""
    labels, points, colors = [], [], []
    for score in result.ranked:
        est = score.estimate
        labels.append(f"{score.name}: {score.candidate.describe()}")
        points.append((est.value, est.ci_low, est.ci_high) if est else (math.nan,) * 3)
        colors.append("tab:orange" if score.name == result.current.name else "tab:blue")
    now = result.current.estimate
    _draw(
        out,
        labels,
        points,
        colors,
        xlabel=f"{result.options.estimator} estimate per event "
        f"({result.options.confidence:.0%} interval)",
        title=f"{result.experiment}: policy search on {result.eval_events} eval events",
        reference=now.value if now else None,
    )


def plot_features(report: FeatureReport, out: Path) -> None:
    labels, points, colors = [], [], []
    for effect in report.effects:
        d = effect.delta
        labels.append(f"{effect.char}: {', '.join(effect.namespaces)}")
        points.append((d.value, d.ci_low, d.ci_high) if d else (math.nan,) * 3)
        colors.append("tab:green" if d is not None and d.ci_low > 0 else "tab:gray")
    _draw(
        out,
        labels,
        points,
        colors,
        xlabel=f"value lost without the namespace ({report.options.estimator}, "
        f"paired {report.options.confidence:.0%} interval)",
        title=f"{report.experiment}: feature evaluation on {report.eval_events} eval events",
        zero_line=True,
    )
