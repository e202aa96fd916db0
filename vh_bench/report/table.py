"""The runs table: one row per results.json (what `python -m vh_bench` prints after a run).

The paper-layout tables (methods × models, seeds aggregated) are in `report.paper`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from vh_bench.report.layout import FORMATS, latex_escape, simple_markdown
from vh_bench.report.records import RunRecord, records_from

__all__ = ["FORMATS", "format_table", "key_columns", "records_frame", "results_frame"]

# Left out of the readable (md/latex) runs table; the CSV keeps every column.
DETAIL_COLUMNS = ("prefill_ms", "ms_tok_p50", "ms_tok_p90", "new_tokens")


def _round(x: Any, nd: int) -> float | None:
    return None if x is None else round(float(x), nd)


def _row(rec: RunRecord) -> dict[str, Any]:
    gen = rec.generation
    row: dict[str, Any] = {
        "model": rec.model,
        "dataset": rec.dataset,
        "method": rec.label,
        "strategy": gen.get("strategy"),
        "beams": gen.get("num_beams"),
        "max_new": gen.get("max_new_tokens"),
        "seed": rec.seed,
    }
    row.update({f"method.{k}": v for k, v in rec.hyper.items()})
    row["samples"] = rec.n_samples
    row["limit"] = rec.limit
    for key in ("CHAIR_S", "CHAIR_I", "Recall"):
        if key in rec.metrics:
            row[key] = _round(rec.metrics[key], 2)
            iv = rec.ci.get(key)
            if iv is not None and iv.low is not None:
                row[f"{key}_ci"] = f"[{iv.low:.2f}, {iv.high:.2f}]"
    if "Len" in rec.metrics:
        row["Len"] = _round(rec.metrics["Len"], 1)
    score = "F1" if rec.opope_beta == 1.0 else f"F{rec.opope_beta:g}"
    for split, f in rec.opope.items():
        row[f"OPOPE_{score}.{split}"] = _round(f, 2)
    for split, f1 in rec.pope.items():
        row[f"POPE_F1.{split}"] = _round(f1, 2)
        iv = rec.pope_ci.get(split)
        if iv is not None and iv.low is not None:
            row[f"POPE_F1.{split}_ci"] = f"[{iv.low:.2f}, {iv.high:.2f}]"
        row["parser_disagree"] = rec.pope_flags.n_parser_disagree
        row["unparseable"] = rec.pope_flags.n_unparseable
        if rec.pope_flags.mostly_unparseable:
            row["warning"] = "mostly unparseable: F1 is not a score"
    speed = rec.speed
    row["decode_tok_s"] = _round(speed.get("decode_tokens_per_s"), 2)
    row["e2e_tok_s"] = _round(speed.get("e2e_tokens_per_s"), 2)
    row["prefill_ms"] = _round(speed.get("prefill_ms_mean"), 1)
    row["ms_tok_p50"] = _round(speed.get("decode_ms_per_token_p50"), 2)
    row["ms_tok_p90"] = _round(speed.get("decode_ms_per_token_p90"), 2)
    row["new_tokens"] = _round(speed.get("mean_new_tokens"), 1)
    row["speed_ok"] = rec.speed_comparable
    row["n"] = rec.n_scored
    row["errors"] = rec.raw.get("n_errors")
    row["run"] = rec.run
    return row


def results_frame(results: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per results.json."""
    return records_frame(records_from(results))


def records_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per run record (`results_frame` of records already made)."""
    rows = [_row(r) for r in records]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # Hyperparameter columns that never vary carry no information in a comparison table.
    for col in [c for c in df.columns if c.startswith("method.")]:
        if df[col].astype(str).nunique(dropna=False) <= 1 and len(df) > 1:
            df = df.drop(columns=col)
    return df.sort_values(["model", "dataset", "method"], kind="stable").reset_index(drop=True)


def key_columns(df: pd.DataFrame) -> pd.DataFrame:
    """The runs table as people read it: identity, metrics, speed, counts, and of the `method.*`
    hyperparameters only the scalar ones that vary between runs of one method (what a sweep swept).
    A table of six methods otherwise carries every method's every knob (about 80 columns, HALC's
    word lists among them); all of them stay in the CSV."""
    if df.empty:
        return df
    keep = []
    for col in df.columns:
        if col in DETAIL_COLUMNS:
            continue
        if col.startswith("method."):
            values = df[col].dropna()
            if values.empty or values.map(lambda v: isinstance(v, str) and v.startswith("[")).any():
                continue  # list-valued (JSON text): unreadable in a cell
            if not (df.groupby("method")[col].nunique(dropna=True) > 1).any():
                continue  # constant within every method: a default, not a comparison
        keep.append(col)
    return df[keep]


def format_table(df: pd.DataFrame, fmt: str = "md") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if df.empty:
        return "(no results)"
    if fmt == "csv":
        return df.to_csv(index=False).rstrip("\n")
    shown = df.astype(object).where(df.notna(), "")
    if fmt == "latex":
        # Written by hand: DataFrame.to_latex needs jinja2, which is not a dependency.
        head = " & ".join(latex_escape(c) for c in shown.columns) + r" \\"
        body = [" & ".join(latex_escape(v) for v in r) + r" \\" for r in shown.itertuples(index=False)]
        spec = "l" * len(shown.columns)
        return "\n".join([r"\begin{tabular}{" + spec + "}", r"\toprule", head, r"\midrule", *body, r"\bottomrule", r"\end{tabular}"])
    return simple_markdown([str(c) for c in shown.columns], shown.values.tolist())
