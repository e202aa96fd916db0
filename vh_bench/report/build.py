"""Everything the report writes for a set of runs: tables in three formats and the speed plot.

Shared by `python -m vh_bench.report --out-dir` and the sweep callback, so both write the same files:
`runs.*` (one row per run), `table1_chair.*`, `table2_pope.*` (each as .md, .csv, .tex) and
`chair_vs_speed.png` / `.pdf`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.report.layout import EXTENSIONS, FORMATS, GroupedTable
from vh_bench.report.paper import chair_table, pope_table
from vh_bench.report.plot import plot_chair_speed
from vh_bench.report.records import RunRecord, records_from
from vh_bench.report.table import format_table, records_frame
from vh_bench.store import atomic_write_text

log = logging.getLogger(__name__)

TABLES = ("chair", "pope", "runs")
PLOT_NAME = "chair_vs_speed"


@dataclass
class Report:
    records: list[RunRecord]
    chair: GroupedTable
    pope: GroupedTable
    runs: Any  # pandas DataFrame
    written: list[Path] = field(default_factory=list)

    def render(self, which: str, fmt: str) -> str:
        if which == "runs":
            return format_table(self.runs, fmt)
        return getattr(self, which).render(fmt)

    def paper_tables(self) -> list[str]:
        """The paper tables that have content, in order (`runs` when neither has)."""
        names = [n for n in ("chair", "pope") if not getattr(self, n).empty]
        return names or ["runs"]


def build_report(results: Sequence[Mapping[str, Any]], *, baseline: str | None = None) -> Report:
    records = records_from(results)
    return Report(records, chair_table(records, baseline=baseline), pope_table(records), records_frame(records))


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
    for which in TABLES:
        if which != "runs" and getattr(report, which).empty:
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
