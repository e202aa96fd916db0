"""Everything the report writes for a set of runs: tables in three formats and the speed plot.

Shared by `python -m vh_bench.report --out-dir` and the sweep callback, so both write the same files:
`runs.*` (one row per run), `table1_chair.*`, `table2_pope.*`, `paired.*` (the comparisons with the
baseline: difference, paired bootstrap interval, permutation p-value; each as .md, .csv, .tex) and
`chair_vs_speed.png` / `.pdf`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vh_bench.report.layout import EXTENSIONS, FORMATS, GroupedTable
from vh_bench.report.paper import chair_table, pope_table
from vh_bench.report.plot import plot_chair_speed
from vh_bench.report.records import RunRecord, records_from
from vh_bench.report.table import format_table, key_columns, records_frame
from vh_bench.store import atomic_write_text

log = logging.getLogger(__name__)

TABLES = ("chair", "pope", "paired", "runs")
PLOT_NAME = "chair_vs_speed"


@dataclass
class Report:
    records: list[RunRecord]
    chair: GroupedTable
    pope: GroupedTable
    runs: Any  # pandas DataFrame
    paired: Any = None  # pandas DataFrame of the paired comparisons (empty without a baseline)
    written: list[Path] = field(default_factory=list)

    def render(self, which: str, fmt: str) -> str:
        if which == "runs":
            # The key columns where people read it; every column in the CSV.
            return format_table(self.runs if fmt == "csv" else key_columns(self.runs), fmt)
        if which == "paired":
            return paired_text(self.paired, fmt)
        return getattr(self, which).render(fmt)

    def paper_tables(self) -> list[str]:
        """The paper tables that have content, in order (`runs` when neither has)."""
        names = [n for n in ("chair", "pope") if not getattr(self, n).empty]
        if names and self.paired is not None and not self.paired.empty:
            names.append("paired")
        return names or ["runs"]


PAIRED_COLUMNS = ("column", "metric", "method", "decoding", "setting", "baseline", "n_units", "candidate",
                  "baseline_value", "difference", "low", "high", "p_value", "excludes_zero")  # fmt: skip


def paired_frame(tables: Sequence[GroupedTable]) -> pd.DataFrame:
    rows = []
    for t in tables:
        for c in t.comparisons:
            rows.append({k: c.get(k) for k in PAIRED_COLUMNS})
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def paired_text(df: pd.DataFrame | None, fmt: str) -> str:
    """The paired table: rounded for people in md/LaTeX, full precision in CSV."""
    if df is None or df.empty:
        return "(no paired comparisons: give a baseline, e.g. --baseline vanilla)"
    if fmt == "csv":
        return format_table(df, fmt)
    shown = df.copy()
    for col in ("candidate", "baseline_value", "difference", "low", "high"):
        shown[col] = shown[col].map(lambda x: "" if x is None or pd.isna(x) else f"{x:.2f}")
    shown["p_value"] = shown["p_value"].map(lambda p: f"{p:.4f}")
    shown["excludes_zero"] = shown["excludes_zero"].map(lambda b: "*" if b else "")
    title = ("**Paired comparisons with the baseline on the same images** (percentage points; interval: 95% paired "
             "bootstrap over images; p: two-sided paired permutation test)")  # fmt: skip
    body = format_table(shown, fmt)
    return f"{title}\n\n{body}" if fmt == "md" else f"% {title.strip('*')}\n{body}"


def build_report(
    results: Sequence[Mapping[str, Any]], *, baseline: str | None = None, allow_mixed: bool = False
) -> Report:
    """Tables and records of these results; `MixedRunsError` when a column would mix sample sets or
    lengths, unless `allow_mixed`."""
    records = records_from(results)
    chair = chair_table(records, baseline=baseline, allow_mixed=allow_mixed)
    pope = pope_table(records, baseline=baseline, allow_mixed=allow_mixed)
    return Report(records, chair, pope, records_frame(records), paired_frame([chair, pope]))


def write_report(
    report: Report,
    out_dir: Path,
    *,
    formats: Sequence[str] = FORMATS,
    plot_metric: str = "CHAIR_S",
    plot: bool = True,
) -> list[Path]:
    """Write every non-empty table in every format, and the plot; returns the files written."""
    written: list[Path] = []
    names = {"chair": "table1_chair", "pope": "table2_pope", "runs": "runs"}
    names["paired"] = "paired"
    for which in TABLES:
        if which == "paired":
            if report.paired is None or report.paired.empty:
                continue
        elif which != "runs" and getattr(report, which).empty:
            continue
        for fmt in formats:
            path = Path(out_dir) / f"{names[which]}.{EXTENSIONS[fmt]}"
            atomic_write_text(path, report.render(which, fmt) + "\n")
            written.append(path)
    if plot:
        drawn = plot_chair_speed(report.records, Path(out_dir) / PLOT_NAME, metric=plot_metric).paths
        if not drawn and not report.chair.empty:
            log.info("no plot: no run has both %s and timed samples (warm-up samples are not timed)", plot_metric)
        written += drawn
    report.written += written
    return written
