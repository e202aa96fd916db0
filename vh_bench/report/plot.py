"""Hallucination against speed: CHAIR_S (or CHAIR_I) over decode tokens/s, one point per run.

The Pareto front (no other run both faster and less hallucinating) is drawn as a line through its
points. One panel per model (and dataset); matplotlib's Agg backend, PNG and PDF side by side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vh_bench.report.paper import decoding_label, setting_label, varying_hyperparameters
from vh_bench.report.records import RunRecord

PLOT_METRICS = ("CHAIR_S", "CHAIR_I")


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (speed, hallucination) points no other point dominates, sorted by speed.

    j dominates i when x_j ≥ x_i and y_j ≤ y_i with at least one strict: faster and/or less
    hallucination, never worse in either. Equal points do not dominate each other.
    """
    front = []
    for i, (xi, yi) in enumerate(points):
        dominated = any(
            xj >= xi and yj <= yi and (xj > xi or yj < yi) for j, (xj, yj) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def point_labels(records: Sequence[RunRecord]) -> list[str]:
    """Method label plus what distinguishes the run: swept hyperparameters, decoding, seed."""
    swept = varying_hyperparameters(records)
    decodings = {decoding_label(r.generation, show_max_new=True) for r in records}
    seeds = {r.seed for r in records}
    out = []
    for r in records:
        parts = [setting_label(r, swept.get(r.method, []))]
        if len(decodings) > 1:
            parts.append(decoding_label(r.generation, show_max_new=True))
        if len(seeds) > 1:
            parts.append(f"seed={r.seed}")
        extra = "; ".join(p for p in parts if p)
        out.append(f"{r.label} ({extra})" if extra else r.label)
    return out


@dataclass
class PlotResult:
    paths: list[Path] = field(default_factory=list)
    fronts: dict[str, list[str]] = field(default_factory=dict)  # panel → point labels on the front, by speed


def plottable(records: Sequence[RunRecord], metric: str = "CHAIR_S") -> list[RunRecord]:
    return [r for r in records if r.metrics.get(metric) is not None and r.decode_tps is not None]


def plot_chair_speed(records: Sequence[RunRecord], out_base: Path, *, metric: str = "CHAIR_S") -> PlotResult:
    """Write `<out_base>.png` and `<out_base>.pdf` (nothing when no run has both axes)."""
    if metric not in PLOT_METRICS:
        raise ValueError(f"plot metric {metric!r} is not one of {', '.join(PLOT_METRICS)}")
    recs = plottable(records, metric)
    result = PlotResult()
    if not recs:
        return result
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display; also safe inside Hydra's multirun callback
    import matplotlib.pyplot as plt

    panels: dict[str, list[RunRecord]] = defaultdict(list)
    several = len({r.dataset for r in recs}) > 1
    for r in recs:
        panels[f"{r.model} / {r.dataset}" if several else r.model].append(r)
    methods = sorted({r.label for r in recs})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.8), squeeze=False)
    for ax, (title, prs) in zip(axes[0], panels.items()):
        pts = [(float(r.decode_tps), float(r.metrics[metric])) for r in prs]  # type: ignore[arg-type]
        # Timings flagged not comparable (resumed on another device) are drawn but cannot be on the front.
        ok = [i for i, r in enumerate(prs) if r.speed_comparable]
        front = [ok[i] for i in pareto_front([pts[i] for i in ok])]
        labels = point_labels(prs)
        result.fronts[title] = [labels[i] for i in front]
        for r, (x, y), label in zip(prs, pts, labels):
            marker = "o" if r.speed_comparable else "x"
            ax.scatter(x, y, color=colours[r.label], marker=marker, s=36, zorder=3, label=r.label)
            text = label if r.speed_comparable else f"{label} † speed not comparable"
            ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        fx, fy = [pts[i][0] for i in front], [pts[i][1] for i in front]
        ax.plot(fx, fy, color="black", linewidth=1.2, zorder=2, label="Pareto front")
        ax.scatter(fx, fy, s=140, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
        ax.set_xlabel("decode tokens/s ↑")
        ax.set_ylabel(f"{metric} (%) ↓")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        handles, names = ax.get_legend_handles_labels()
        uniq = dict(zip(names, handles))  # one legend entry per method
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="best")
    fig.tight_layout()
    out_base.parent.mkdir(parents=True, exist_ok=True)
    result.paths = [out_base.with_suffix(".png"), out_base.with_suffix(".pdf")]
    for p in result.paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return result
