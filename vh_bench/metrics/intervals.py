"""Per-image count tables of CHAIR, POPE and OPOPE results and their bootstrap intervals.

A `UnitTable` holds, per unit (a caption, or the questions about one image), the integer counts
whose sums make a metric (metrics.md §1.8, §3.7). It goes into results.json so that the report can
compare two runs image by image (paired tests) without rescoring anything. The statistics here are
the metric formulas written on sums (`vh_bench.metrics.stats`), so the estimate of each interval is
the reported metric itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vh_bench.metrics.stats import (
    DEFAULT_LEVEL,
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Interval,
    PairedComparison,
    Statistic,
    align_units,
    bootstrap,
    f_beta_statistic,
    paired_comparison,
    ratio_statistic,
)


@dataclass
class UnitTable:
    unit: str  # what one row is: "caption" or "image"
    ids: list[str] = field(default_factory=list)
    columns: dict[str, list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def as_dict(self) -> dict[str, Any]:
        return {"unit": self.unit, "ids": list(self.ids), "columns": {k: list(v) for k, v in self.columns.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UnitTable:
        return cls(str(d.get("unit", "image")), [str(i) for i in d.get("ids", [])],
                   {str(k): [int(x) for x in v] for k, v in (d.get("columns") or {}).items()})  # fmt: skip


# ---- the statistics, as formulas on sums ------------------------------------------------------
def _accuracy(s: Mapping[str, np.ndarray]) -> np.ndarray:
    return ratio_statistic("correct", "n")({"correct": s["tp"] + s["tn"], "n": s["n"]})


def chair_statistics() -> dict[str, Statistic]:
    """metrics.md §1.8: CHAIR_S over captions, CHAIR_I and Recall pooled (ratios of sums)."""
    return {
        "CHAIRs": ratio_statistic("hallucinated", "captions"),
        "CHAIRi": ratio_statistic("hallucinated_mentions", "mentions"),
        "Recall": ratio_statistic("covered", "gt"),
    }


def confusion_statistics(beta: float | None = None) -> dict[str, Statistic]:
    """metrics.md §3.7 from summed confusion counts; `f_beta` too when β is given (OPOPE)."""
    stats: dict[str, Statistic] = {"accuracy": _accuracy, "f1": f_beta_statistic(1.0)}
    if beta is not None:
        stats["f_beta"] = f_beta_statistic(beta)
    return stats


# ---- unit tables --------------------------------------------------------------------------------
def chair_units(sample_ids: Sequence[str], sentences: Sequence[Mapping[str, Any]]) -> UnitTable:
    """One row per scored caption from evaluate_chair's per-caption records (§1.9 `sentences`)."""
    if len(sample_ids) != len(sentences):
        raise ValueError(f"{len(sample_ids)} sample ids for {len(sentences)} scored captions")
    cols: dict[str, list[int]] = {k: [] for k in ("captions", "hallucinated", "hallucinated_mentions", "mentions", "covered", "gt")}
    for s in sentences:
        m = s["metrics"]
        gt = set(s["mscoco_gt_words"])
        cols["captions"].append(1)
        cols["hallucinated"].append(int(m["n_hallucinated"] > 0))
        cols["hallucinated_mentions"].append(int(m["n_hallucinated"]))
        cols["mentions"].append(int(m["n_mentions"]))
        cols["covered"].append(len({w for w in s["mscoco_generated_words"] if w in gt}))  # §1.6 covered(c)
        cols["gt"].append(len(gt))
    return UnitTable("caption", [str(i) for i in sample_ids], cols)


def confusion_units(items: Iterable[tuple[Any, Mapping[str, int]]], unit: str = "image") -> UnitTable:
    """Per-unit sums of per-question confusion counts (`tp`, `fp`, `tn`, `fn`, `n`), units in first-seen order."""
    keys = ("tp", "fp", "tn", "fn", "n")
    acc: dict[str, dict[str, int]] = {}
    for uid, counts in items:
        row = acc.setdefault(str(uid), dict.fromkeys(keys, 0))
        for k in keys:
            row[k] += int(counts[k])
    return UnitTable(unit, list(acc), {k: [acc[u][k] for u in acc] for k in keys})


# ---- intervals and comparisons -----------------------------------------------------------------
@dataclass(frozen=True)
class BootstrapSettings:
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    level: float = DEFAULT_LEVEL

    def as_dict(self) -> dict[str, Any]:
        return {"n_resamples": self.n_resamples, "seed": self.seed, "level": self.level}


def intervals(
    units: UnitTable, statistics: Mapping[str, Statistic], settings: BootstrapSettings = BootstrapSettings()
) -> dict[str, dict[str, Any]]:
    """{metric: Interval.as_dict()} for each statistic, over the rows of `units`."""
    if not len(units):
        raise ValueError("no scored units: nothing to put an interval on")
    out = {}
    for name, stat in statistics.items():
        iv = bootstrap(units.columns, stat, n_resamples=settings.n_resamples, seed=settings.seed, level=settings.level)
        out[name] = iv.as_dict() | {"unit": units.unit}
    return out


def compare(
    candidate: UnitTable,
    baseline: UnitTable,
    statistic: Statistic,
    settings: BootstrapSettings = BootstrapSettings(),
) -> PairedComparison:
    """Paired comparison of two runs' unit tables; `NotPairedError` unless they cover the same units."""
    a, b = align_units(candidate.ids, candidate.columns, baseline.ids, baseline.columns)
    return paired_comparison(a, b, statistic, n_resamples=settings.n_resamples, seed=settings.seed, level=settings.level)


def interval_of(block: Mapping[str, Any] | None, key: str) -> Interval | None:
    """The Interval stored under `block["ci"][key]`, if any."""
    if not isinstance(block, Mapping):
        return None
    d = (block.get("ci") or {}).get(key)
    return Interval.from_dict(d) if isinstance(d, Mapping) else None
