"""Collect `results.json` files into one pandas table (one row per run) and format it."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

FORMATS = ("md", "csv", "latex")


def find_results(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("results.json") if p.is_file())


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        try:
            out.append(json.loads(p.read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not valid JSON ({exc})") from None
    return out


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, into)
    else:
        into[prefix] = value if not isinstance(value, list) else json.dumps(value)


def _pct(x: Any) -> float | None:
    return None if x is None else round(100.0 * float(x), 2)


def _row(res: Mapping[str, Any]) -> dict[str, Any]:
    gen = res.get("generation", {})
    row: dict[str, Any] = {
        "model": res.get("model"),
        "dataset": res.get("dataset"),
        "method": res.get("method_label", res.get("method")),
        "strategy": gen.get("strategy"),
        "beams": gen.get("num_beams"),
        "max_new": gen.get("max_new_tokens"),
        "seed": res.get("seed"),
    }
    hyper: dict[str, Any] = {}
    _flatten("method", res.get("hyperparameters", {}), hyper)
    row.update(hyper)
    metrics = res.get("metrics", {}) or {}
    chair = metrics.get("chair") or {}
    if chair:
        row["CHAIR_S"] = _pct(chair.get("CHAIRs"))
        row["CHAIR_I"] = _pct(chair.get("CHAIRi"))
        row["Recall"] = _pct(chair.get("Recall"))
        row["Len"] = chair.get("avg_tokens")
    for split, m in (metrics.get("opope") or {}).items():
        if isinstance(m, Mapping) and "f1" in m:
            row[f"OPOPE_F1.{split}"] = _pct(m["f1"])
    pope = metrics.get("pope") or {}
    if pope:
        split = res.get("data", {}).get("split", "")
        suffix = f".{split}" if split else ""
        row[f"POPE_F1{suffix}"] = _pct(pope.get("f1"))
        row[f"POPE_acc{suffix}"] = _pct(pope.get("accuracy"))
        row[f"POPE_yes{suffix}"] = _pct(pope.get("yes_ratio"))
    speed = res.get("speed", {}) or {}
    row["decode_tok_s"] = _round(speed.get("decode_tokens_per_s"), 2)
    row["e2e_tok_s"] = _round(speed.get("e2e_tokens_per_s"), 2)
    row["prefill_ms"] = _round(speed.get("prefill_ms_mean"), 1)
    row["new_tokens"] = _round(speed.get("mean_new_tokens"), 1)
    row["n"] = res.get("n_done")
    row["errors"] = res.get("n_errors")
    row["run"] = Path(str(res.get("run_dir", ""))).name
    return row


def _round(x: Any, nd: int) -> float | None:
    return None if x is None else round(float(x), nd)


def results_frame(results: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [_row(r) for r in results]
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    # Hyperparameter columns that never vary carry no information in a comparison table.
    for col in [c for c in df.columns if c.startswith("method.")]:
        if df[col].astype(str).nunique(dropna=False) <= 1 and len(df) > 1:
            df = df.drop(columns=col)
    return df.sort_values(["model", "dataset", "method"], kind="stable").reset_index(drop=True)


def format_table(df: pd.DataFrame, fmt: str = "md") -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
    if df.empty:
        return "(no results)"
    if fmt == "csv":
        return df.to_csv(index=False)
    shown = df.astype(object).where(df.notna(), "")
    if fmt == "latex":
        return shown.to_latex(index=False, escape=True)
    return _markdown(shown)


def _markdown(df: pd.DataFrame) -> str:
    # pandas' to_markdown needs `tabulate`; this small writer avoids the extra dependency.
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v) for v in r.tolist()) + " |")
    return "\n".join(lines)
