"""A grouped table (row headers × (group, metric) cells) and its markdown / CSV / LaTeX writers.

The paper tables share this shape: methods as rows, one column group per model (VASparse Tables 1
and 2), each cell the mean of one or more seeds. Cells keep their raw values so a writer can print
`mean ± std` (markdown, LaTeX) or separate mean and std columns (CSV, for machines).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import mean, stdev

FORMATS = ("md", "csv", "latex")
LATEX_FLAGS = {"†": r"$^\dagger$", "‡": r"$^\ddagger$", "*": r"$^{*}$", "§": r"$^\S$", "¶": r"$^\P$", "°": r"$^\circ$"}
EXTENSIONS = {"md": "md", "csv": "csv", "latex": "tex"}


@dataclass(frozen=True)
class Metric:
    key: str
    md: str  # header in markdown / CSV
    latex: str  # header in LaTeX (math allowed)
    decimals: int = 1
    ratio: bool = False  # a derived ratio: printed as ×1.23, no seed spread of its own
    spread: bool = True  # False for settings such as n or max_new_tokens: the mean alone


@dataclass
class Cell:
    values: list[float]
    flag: str = ""  # footnote marks, e.g. "†" for timings that are not comparable
    interval: tuple[float, float] | None = None  # bootstrap interval of a single run's value
    unreliable: bool = False  # shown in parentheses: a number that is not a score (e.g. unparsed POPE)
    suffix: str = ""  # extra text after the number, e.g. "(2 failed)"
    sources: list[object] = field(default_factory=list, repr=False)  # the run records behind the cell

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return mean(self.values)

    @property
    def std(self) -> float | None:
        # Sample standard deviation (n − 1): the spread across seeds, not of the mean.
        return stdev(self.values) if self.n > 1 else None


@dataclass
class GroupedTable:
    title: str
    row_headers: tuple[str, ...]
    rows: list[tuple[str, ...]]
    columns: list[tuple[str, Metric]]  # (group, metric) in display order
    cells: dict[tuple[tuple[str, ...], str, str], Cell] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    comparisons: list[dict[str, object]] = field(default_factory=list)  # paired tests against the baseline

    @property
    def groups(self) -> list[str]:
        seen: list[str] = []
        for g, _ in self.columns:
            if g not in seen:
                seen.append(g)
        return seen

    @property
    def empty(self) -> bool:
        return not self.rows or not self.columns

    def cell(self, row: tuple[str, ...], group: str, metric: str) -> Cell | None:
        return self.cells.get((row, group, metric))

    @property
    def max_seeds(self) -> int:
        return max((c.n for c in self.cells.values()), default=0)

    def render(self, fmt: str) -> str:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        if self.empty:
            return "(no results)"
        return {"md": self._markdown, "csv": self._csv, "latex": self._latex}[fmt]()

    # ---- writers -------------------------------------------------------------------------
    def _text(self, row: tuple[str, ...], group: str, m: Metric, latex: bool = False) -> str:
        c = self.cell(row, group, m.key)
        if c is None or not c.values:
            return "–" if not latex else "--"
        text = _num(c.mean, m.decimals)
        if m.ratio:
            text = (r"$\times$" if latex else "×") + text
        if c.std is not None and m.spread:
            pm = r" $\pm$ " if latex else " ± "
            text += f"{pm}{_num(c.std, m.decimals)}"
        elif c.interval is not None and c.std is None:
            text += f" [{_num(c.interval[0], m.decimals)}, {_num(c.interval[1], m.decimals)}]"
        if c.unreliable:
            text = f"({text})"
        if c.flag:
            text += "".join(LATEX_FLAGS.get(f, f"$^{{{f}}}$") for f in c.flag) if latex else c.flag
        if c.suffix:
            text += f" {latex_escape(c.suffix) if latex else c.suffix}"
        return text

    @property
    def has_intervals(self) -> bool:
        return any(c.interval is not None for c in self.cells.values())

    def _header_name(self, group: str, m: Metric) -> str:
        return m.md if len(self.groups) == 1 else f"{group} {m.md}"

    def _markdown(self) -> str:
        head = list(self.row_headers) + [self._header_name(g, m) for g, m in self.columns]
        rows = [list(row) + [self._text(row, g, m) for g, m in self.columns] for row in self.rows]
        lines = [f"**{self.title}**", "", simple_markdown(head, rows)]
        if self.has_intervals:
            lines += ["", "[low, high]: 95% percentile bootstrap interval over images (one run per cell)."]
        if self.max_seeds > 1:
            lines += ["", "Cells with several seeds: mean ± sample std over seeds."]
        lines += [""] + self.notes if self.notes else []
        return "\n".join(lines)

    def _csv(self) -> str:
        with_std = self.max_seeds > 1
        with_ci = self.has_intervals
        with_flags = any(c.flag or c.unreliable for c in self.cells.values())
        head = list(self.row_headers)
        for g, m in self.columns:
            name = f"{g}/{m.key}"
            head.append(name)
            if with_std and not m.ratio and m.spread:
                head += [f"{name}_std", f"{name}_n"]
            if with_ci and not m.ratio and m.spread:
                head += [f"{name}_low", f"{name}_high"]
            if with_flags:
                head.append(f"{name}_flags")
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(head)
        for row in self.rows:
            out: list[object] = list(row)
            for g, m in self.columns:
                c = self.cell(row, g, m.key)
                out.append("" if c is None else _csv_num(c.mean))
                if with_std and not m.ratio and m.spread:
                    out.append("" if c is None or c.std is None else _csv_num(c.std))
                    out.append("" if c is None else c.n)
                if with_ci and not m.ratio and m.spread:
                    iv = None if c is None else c.interval
                    out += ["", ""] if iv is None else [_csv_num(iv[0]), _csv_num(iv[1])]
                if with_flags:
                    out.append("" if c is None else c.flag + ("()" if c.unreliable else ""))
            w.writerow(out)
        return buf.getvalue().rstrip("\n")

    def _latex(self) -> str:
        n_rh = len(self.row_headers)
        spec = "l" * n_rh + "".join("c" for _ in self.columns)
        lines = [
            "% " + self.title,
            r"\begin{tabular}{" + spec + "}",
            r"\toprule",
        ]
        # Group header with \multicolumn and \cmidrule, as in VASparse Tables 1–2.
        spans: list[tuple[str, int]] = []
        for g, _ in self.columns:
            if spans and spans[-1][0] == g:
                spans[-1] = (g, spans[-1][1] + 1)
            else:
                spans.append((g, 1))
        top = [""] * n_rh + [rf"\multicolumn{{{k}}}{{c}}{{{latex_escape(g)}}}" for g, k in spans]
        lines.append(" & ".join(top) + r" \\")
        rules, col = [], n_rh + 1
        for _, k in spans:
            rules.append(rf"\cmidrule(lr){{{col}-{col + k - 1}}}")
            col += k
        lines.append(" ".join(rules))
        second = [latex_escape(h) for h in self.row_headers] + [m.latex for _, m in self.columns]
        lines.append(" & ".join(second) + r" \\")
        lines.append(r"\midrule")
        for row in self.rows:
            vals = [latex_escape(v) for v in row] + [self._text(row, g, m, latex=True) for g, m in self.columns]
            lines.append(" & ".join(vals) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        if self.has_intervals:
            lines.append(r"% [low, high]: 95% percentile bootstrap interval over images (one run per cell)")
        if self.max_seeds > 1:
            lines.append(r"% cells with several seeds: mean $\pm$ sample std over seeds")
        lines += ["% " + n for n in self.notes]
        return "\n".join(lines)


def _csv_num(x: float) -> str:
    # Full precision for machines, without float noise such as 55.00000000000001.
    return repr(round(x, 9))


def _num(x: float, decimals: int) -> str:
    if math.isnan(x):
        return "nan"
    return f"{x:.{decimals}f}"


def _md_escape(text: str) -> str:
    return str(text).replace("|", r"\|")


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}  # fmt: skip


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def simple_markdown(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain markdown table (pandas' to_markdown needs `tabulate`, an extra dependency)."""
    lines = ["| " + " | ".join(str(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_md_escape("" if v is None else str(v)) for v in r) + " |")
    return "\n".join(lines)
