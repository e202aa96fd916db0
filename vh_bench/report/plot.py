"""Hallucination against speed: CHAIR_S and CHAIR_I over decode tokens/s, one point per run.

One row of two panels (CHAIR_S, CHAIR_I) per group of comparable runs: same model, dataset, sample
set and `max_new_tokens` (runs over other samples or lengths get their own row, never one front).
Each point has its 95 % bootstrap interval as a vertical whisker. The Pareto front (no other run
both faster and less hallucinating) is drawn as a line through its points. Labels sit in a column
beside each panel, spread so that they never overlap, each joined to its point by a thin line.
matplotlib's Agg backend; PNG and PDF side by side.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.report.paper import decoding_label, setting_label, varying_hyperparameters
from vh_bench.report.records import RunRecord

PLOT_METRICS = ("CHAIR_S", "CHAIR_I")
LABEL_FONTSIZE = 7
# Layout in inches: panel, label column, gaps. Fixed sizes make the label spacing computable.
PANEL_W, PANEL_H_MIN, MARGIN_L, MARGIN_R, MARGIN_B, MARGIN_T, GAP = 4.2, 3.0, 1.0, 0.2, 0.6, 0.75, 1.0
LINE_IN = LABEL_FONTSIZE * 1.45 / 72  # height of one label line
CHAR_IN = LABEL_FONTSIZE * 0.6 / 72  # a generous average character width (DejaVu Sans ≈ 0.55 em)


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


def spread_labels(ys: Sequence[float], gap: float, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """Label positions as close to `ys` as possible, in the same order, at least `gap` apart, in [lo, hi].

    A forward pass pushes labels up to keep the gap, a backward pass pulls them under `hi`; with
    (n−1)·gap ≤ hi − lo (the gap shrinks to fit otherwise) the result stays ≥ lo.
    """
    n = len(ys)
    if n == 0:
        return []
    if n > 1:
        gap = min(gap, (hi - lo) / (n - 1))
    order = sorted(range(n), key=lambda i: (ys[i], i))
    pos = [0.0] * n
    prev = None
    for i in order:
        p = max(min(max(ys[i], lo), hi), lo if prev is None else prev + gap)
        pos[i] = p
        prev = p
    nxt = None
    for i in reversed(order):
        p = min(pos[i], hi if nxt is None else nxt - gap)
        pos[i] = p
        nxt = p
    return [min(max(p, lo), hi) for p in pos]  # rounding of the passes can step 1e-16 outside


def point_labels(records: Sequence[RunRecord]) -> list[str]:
    """Method label plus what distinguishes the run: swept hyperparameters, decoding, seed, limit."""
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
    # metric → panel title → point labels on the front, by speed
    fronts: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    titles: list[str] = field(default_factory=list)  # panel titles, in drawing order
    n_labels: int = 0
    # label boxes overlapping another label, a panel or a y axis, or cut off by the page, in the
    # rendered figure (0 for a readable plot)
    label_overlaps: int = 0
    y_limits: dict[str, tuple[float, float]] = field(default_factory=dict)  # panel title → (bottom, top)


def plottable(records: Sequence[RunRecord], metric: str = "CHAIR_S") -> list[RunRecord]:
    return [r for r in records if r.metrics.get(metric) is not None and r.decode_tps is not None]


def _groups(records: Sequence[RunRecord]) -> dict[tuple[Any, ...], list[RunRecord]]:
    groups: dict[tuple[Any, ...], list[RunRecord]] = defaultdict(list)
    for r in records:
        groups[(r.model, r.dataset, r.sample_key)].append(r)
    return groups


def group_title(r: RunRecord) -> str:
    """`model / dataset · n=12 · 64 new tokens` (and the limit, if the runs were limited)."""
    lim = f" (limit={r.limit})" if r.limit is not None else ""
    return f"{r.model} / {r.dataset} · n={r.n_samples}{lim} · {r.max_new} new tokens"


def _overlaps(boxes: list[Any]) -> int:
    return sum(1 for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j]))


def plot_chair_speed(records: Sequence[RunRecord], out_base: Path, *, metric: str = "CHAIR_S") -> PlotResult:
    """Write `<out_base>.png` and `<out_base>.pdf` (nothing when no run has CHAIR and timings).

    `metric` is kept for callers of the one-panel plot: both CHAIR_S and CHAIR_I are drawn now, and
    a run needs the `metric` one to be plotted at all."""
    if metric not in PLOT_METRICS:
        raise ValueError(f"plot metric {metric!r} is not one of {', '.join(PLOT_METRICS)}")
    recs = plottable(records, metric)
    result = PlotResult()
    if not recs:
        return result
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display; also safe inside Hydra's multirun callback
    import matplotlib.pyplot as plt
    from matplotlib.text import Text

    groups = _groups(recs)
    methods = sorted({r.label for r in recs})
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    labels_of = {
        key: [lab if r.speed_comparable else f"{lab} † speed not comparable" for r, lab in zip(prs, point_labels(prs))]
        for key, prs in groups.items()
    }
    label_w = max(1.6, CHAR_IN * max(len(lab) for labs in labels_of.values() for lab in labs) + 0.3)
    heights = [max(PANEL_H_MIN, LINE_IN * 1.25 * len(prs) + 0.4) for prs in groups.values()]
    fig_w = MARGIN_L + 2 * (PANEL_W + label_w) + GAP + MARGIN_R
    fig_h = MARGIN_T + sum(h + MARGIN_B + 0.35 for h in heights)
    fig = plt.figure(figsize=(fig_w, fig_h))
    texts = []
    top = fig_h - MARGIN_T
    for (key, prs), h in zip(groups.items(), heights):
        labels = labels_of[key]
        title = group_title(prs[0])
        result.titles.append(title)
        bottom = top - h - 0.35
        for col, m in enumerate(PLOT_METRICS):
            left = MARGIN_L + col * (PANEL_W + label_w + GAP)
            ax = fig.add_axes((left / fig_w, bottom / fig_h, PANEL_W / fig_w, h / fig_h))
            texts += _panel(ax, prs, labels, m, colours, h, result, title)
        top = bottom - MARGIN_B
    fig.suptitle("Object hallucination vs decoding speed (whiskers: 95% bootstrap interval over images; "
                 "black line: Pareto front)", fontsize=9)  # fmt: skip
    renderer = fig.canvas.get_renderer()
    # Text.get_window_extent: the label's own box (an Annotation's extent also covers its leader line).
    for t in texts:
        t.update_positions(renderer)  # places the text in display space (as drawing does)
    boxes = [Text.get_window_extent(t, renderer) for t in texts]
    result.n_labels = len(boxes)
    # What a reader would see as clutter: labels on labels, on a panel or its y axis, or cut off.
    obstacles = [b for ax in fig.axes for b in (ax.get_window_extent(renderer), ax.yaxis.get_tightbbox(renderer))]
    page = fig.bbox
    result.label_overlaps = _overlaps(boxes) + sum(1 for b in boxes for o in obstacles if b.overlaps(o))
    result.label_overlaps += sum(1 for b in boxes if not (b.x0 >= page.x0 and b.x1 <= page.x1 and b.y0 >= page.y0 and b.y1 <= page.y1))
    out_base.parent.mkdir(parents=True, exist_ok=True)
    result.paths = [out_base.with_suffix(".png"), out_base.with_suffix(".pdf")]
    for p in result.paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return result


def _panel(ax: Any, prs: list[RunRecord], labels: list[str], metric: str, colours: dict[str, Any],
           height_in: float, result: PlotResult, title: str) -> list[Any]:  # fmt: skip
    """One panel: points with whiskers, the front, and the label column; returns the label texts."""
    idx = [i for i, r in enumerate(prs) if r.metrics.get(metric) is not None]
    pts = {i: (float(prs[i].decode_tps), float(prs[i].metrics[metric])) for i in idx}  # type: ignore[arg-type]
    ivs = {i: prs[i].ci.get(metric) for i in idx}
    ax.set_title(f"{metric}: {title}", fontsize=8)
    if not idx:  # e.g. CHAIR_I undefined (no object mentions) in every run of the group
        ax.text(0.5, 0.5, f"no {metric} (undefined for these runs)", ha="center", va="center", transform=ax.transAxes)
        return []
    for i in idx:
        r, (x, y), iv = prs[i], pts[i], ivs[i]
        colour = colours[r.label]
        if iv is not None and iv.low is not None and iv.high is not None:
            ax.errorbar([x], [y], yerr=[[y - iv.low], [iv.high - y]], fmt="none", ecolor=colour,
                        elinewidth=1.0, capsize=3, zorder=2)  # fmt: skip
        ax.scatter(x, y, color=colour, marker="o" if r.speed_comparable else "x", s=36, zorder=3)
    # Timings flagged not comparable (resumed on another device) are drawn but cannot be on the front.
    ok = [i for i in idx if prs[i].speed_comparable]
    front = [ok[k] for k in pareto_front([pts[i] for i in ok])]
    result.fronts.setdefault(metric, {})[title] = [labels[i] for i in front]
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], color="black", linewidth=1.2, zorder=2.5)
    ax.scatter([pts[i][0] for i in front], [pts[i][1] for i in front], s=140, facecolors="none",
               edgecolors="black", linewidths=1.2, zorder=4)  # fmt: skip
    # y: the points and whiskers with a margin, never outside 0–100 %.
    lows = [ivs[i].low if ivs[i] is not None and ivs[i].low is not None else pts[i][1] for i in idx]
    highs = [ivs[i].high if ivs[i] is not None and ivs[i].high is not None else pts[i][1] for i in idx]
    lo, hi = min(lows), max(highs)
    pad = max(2.0, 0.08 * (hi - lo))
    y0, y1 = max(0.0, lo - pad), min(100.0, hi + pad)
    if y1 - y0 < 1.0:
        y0, y1 = max(0.0, y1 - 1.0), min(100.0, y0 + 1.0)
    ax.set_ylim(y0, y1)
    xs = [p[0] for p in pts.values()]
    xpad = max(0.05 * (max(xs) - min(xs)), 0.05 * max(xs), 1e-3)
    ax.set_xlim(max(0.0, min(xs) - xpad), max(xs) + xpad)
    result.y_limits[f"{title} {metric}"] = (y0, y1)
    ax.set_xlabel("decode tokens/s ↑")
    ax.set_ylabel(f"{metric} (%) ↓")
    ax.grid(True, alpha=0.3)
    # Labels in a column right of the panel, in axes coordinates, spread to one line apart.
    to_axes = ax.transAxes.inverted()
    wanted = [float(to_axes.transform(ax.transData.transform(pts[i]))[1]) for i in idx]
    placed = spread_labels(wanted, gap=1.15 * LINE_IN / height_in)
    texts = []
    for i, y in zip(idx, placed):
        r = prs[i]
        ann = ax.annotate(
            labels[i], xy=pts[i], xycoords="data", xytext=(1.03, y), textcoords="axes fraction",
            fontsize=LABEL_FONTSIZE, va="center", ha="left", color=colours[r.label], annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": colours[r.label], "alpha": 0.5, "linewidth": 0.6,
                        "shrinkA": 1, "shrinkB": 3},
        )  # fmt: skip
        texts.append(ann)
    return texts
