"""The two comparison tables in the layout of the VASparse paper (arXiv 2501.06553).

- Table 1 (`chair_table`): methods as rows; per model a column group CHAIR_I, CHAIR_S, tokens/s
  (the headline decode TPS of metrics.md §5), plus `TPS ×` relative to `--baseline` when given.
- Table 2 (`pope_table`): methods as rows; per model and benchmark (POPE per source, OPOPE) the F1
  of each split and their average.

A row is one method configuration: the method's label, its decoding setting and the
hyperparameters that vary between runs of that method. Runs differing only in `seed` share a row
and the cell shows mean ± sample std over seeds.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import mean
from typing import Any

from vh_bench.metrics.pope import SPLITS as POPE_SPLITS
from vh_bench.report.layout import Cell, GroupedTable, Metric
from vh_bench.report.records import RunRecord

ROW_HEADERS = ("Method", "Decoding", "Setting")
NOT_COMPARABLE = "†"

CHAIR_I = Metric("CHAIR_I", "CHAIR_I ↓", r"CHAIR$_I\downarrow$", 1)
CHAIR_S = Metric("CHAIR_S", "CHAIR_S ↓", r"CHAIR$_S\downarrow$", 1)
TPS = Metric("decode_tps", "tokens/s ↑", r"Tokens/s$\uparrow$", 2)
TPS_RATIO = Metric("decode_tps_ratio", "TPS ×", r"TPS$\times$", 2, ratio=True)
TABLE1_METRICS = (CHAIR_I, CHAIR_S, TPS)

_GEN_DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "length_penalty": 1.0}


# ---- what identifies a row -------------------------------------------------------------------
def varying_hyperparameters(records: Iterable[RunRecord]) -> dict[str, list[str]]:
    """Per method, the hyperparameter keys whose values differ between its runs (the swept ones)."""
    values: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for r in records:
        for k, v in r.hyper.items():
            values[r.method][k].add(repr(v))
    return {m: sorted(k for k, vs in keys.items() if len(vs) > 1) for m, keys in values.items()}


def setting_label(rec: RunRecord, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={_short(rec.hyper.get(k))}" for k in keys)


def _short(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def decoding_label(gen: dict[str, Any], *, show_max_new: bool = False) -> str:
    s = str(gen.get("strategy", "?"))
    if s == "beam":
        s = f"beam({gen.get('num_beams', '?')})"
    extras = [f"{k}={_short(gen[k])}" for k, d in _GEN_DEFAULTS.items() if k in gen and gen[k] != d]
    if s.startswith("beam"):
        extras = [e for e in extras if not e.startswith(("temperature", "top_k", "top_p"))]
    else:
        extras = [e for e in extras if not e.startswith("length_penalty")]
    if show_max_new:
        extras.append(f"{gen.get('max_new_tokens', '?')} tok")
    return s + (f" ({', '.join(extras)})" if extras else "")


def row_keys(records: Sequence[RunRecord]) -> dict[int, tuple[str, str, str]]:
    """Row (method, decoding, setting) of each record, by position."""
    swept = varying_hyperparameters(records)
    show_max_new = len({r.generation.get("max_new_tokens") for r in records}) > 1
    return {
        i: (r.label, decoding_label(r.generation, show_max_new=show_max_new), setting_label(r, swept.get(r.method, [])))
        for i, r in enumerate(records)
    }


def column_group(rec: RunRecord, several_datasets: bool) -> str:
    return f"{rec.model} / {rec.dataset}" if several_datasets else rec.model


def _order_rows(rows: Iterable[tuple[str, ...]], method_of: dict[tuple[str, ...], str], baseline: str | None) -> list[tuple[str, ...]]:
    first = baseline or "vanilla"
    return sorted(set(rows), key=lambda r: (method_of[r] != first, r[0].lower(), r[1], r[2]))


def _seed_means(by_seed: dict[Any, list[float]]) -> list[float]:
    # One value per seed: a seed that ran twice (two run directories) is averaged first, so it does
    # not weigh double in the mean ± std over seeds.
    return [mean(by_seed[s]) for s in sorted(by_seed, key=str)]


# ---- Table 1 ---------------------------------------------------------------------------------
def chair_table(records: Sequence[RunRecord], *, baseline: str | None = None) -> GroupedTable:
    recs = [r for r in records if "CHAIR_S" in r.metrics or "CHAIR_I" in r.metrics]
    keys = row_keys(recs)
    several = len({r.dataset for r in recs}) > 1
    method_of = {keys[i]: r.method for i, r in enumerate(recs)}
    values: dict[tuple[tuple[str, ...], str, str], dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    flags: dict[tuple[tuple[str, ...], str, str], str] = {}
    envs: dict[str, set[str]] = defaultdict(set)
    for i, r in enumerate(recs):
        g = column_group(r, several)
        for m in (CHAIR_I, CHAIR_S):
            if r.metrics.get(m.key) is not None:
                values[(keys[i], g, m.key)][r.seed].append(r.metrics[m.key])
        if r.decode_tps is not None:
            values[(keys[i], g, TPS.key)][r.seed].append(r.decode_tps)
            envs[g].add(r.env)
            if not r.speed_comparable:
                flags[(keys[i], g, TPS.key)] = NOT_COMPARABLE
    groups = list(dict.fromkeys(column_group(r, several) for r in recs))
    metrics = list(TABLE1_METRICS) + ([TPS_RATIO] if baseline else [])
    table = GroupedTable(
        title="Table 1: CHAIR (%) and decoding speed (tokens/s after the first token)",
        row_headers=ROW_HEADERS,
        rows=_order_rows(keys.values(), method_of, baseline),
        columns=[(g, m) for g in groups for m in metrics],
    )
    for k, seeds in values.items():
        table.cells[k] = Cell(_seed_means(seeds), flags.get(k, ""))
    if baseline:
        _add_ratios(table, method_of, baseline)
    if flags:
        table.notes.append(f"{NOT_COMPARABLE} timings mix devices or settings (resumed run): not comparable.")
    for g in groups:
        if len(envs[g]) > 1:
            table.notes.append(f"{g}: tokens/s measured on different setups ({'; '.join(sorted(envs[g]))}): compare ratios within one setup only.")
    return table


def _add_ratios(table: GroupedTable, method_of: dict[tuple[str, ...], str], baseline: str) -> None:
    """`TPS ×` = mean TPS of the row / mean TPS of the baseline row in the same model group.

    The baseline row is the baseline method with the same decoding setting; failing that, the only
    baseline row of the group. With no (unambiguous) baseline the ratio is left empty.
    """
    base_rows = [r for r in table.rows if method_of[r] == baseline]
    if not base_rows:
        table.notes.append(f"no runs of baseline {baseline!r}: no ratio column values")
    for g in table.groups:
        with_tps = [b for b in base_rows if table.cell(b, g, TPS.key) is not None]
        for row in table.rows:
            c = table.cell(row, g, TPS.key)
            if c is None:
                continue
            same = [b for b in with_tps if b[1] == row[1]]
            base = same[0] if len(same) == 1 else (with_tps[0] if len(with_tps) == 1 else None)
            if base is None:
                continue
            b = table.cell(base, g, TPS.key)
            assert b is not None
            if b.mean > 0:
                table.cells[(row, g, TPS_RATIO.key)] = Cell([c.mean / b.mean])
    table.notes.append(f"TPS × = tokens/s relative to {baseline} with the same decoding in the same model column (ratio of seed means).")


# ---- Table 2 ---------------------------------------------------------------------------------
def _split_metric(split: str) -> Metric:
    return Metric(f"F1.{split}", split, split.capitalize() if split != "mean" else "Avg.", 1)


def _benchmark_blocks(r: RunRecord) -> list[tuple[str, dict[str, float]]]:
    out = []
    if r.pope:
        out.append((f"POPE {r.pope_source}" if r.pope_source else "POPE", r.pope))
    if r.opope:
        out.append(("OPOPE", r.opope))
    return out


def pope_table(records: Sequence[RunRecord]) -> GroupedTable:
    """F1 (%) per split; `Avg.` is, per seed, the mean over the three splits, then mean ± std over seeds."""
    recs = [r for r in records if r.pope or r.opope]
    keys = row_keys(recs)
    several = len({r.dataset for r in recs if r.opope}) > 1
    method_of = {keys[i]: r.method for i, r in enumerate(recs)}
    # (row, group, split) → seed → F1; POPE runs are one split each, OPOPE runs carry all three.
    by_seed: dict[tuple[tuple[str, ...], str, str], dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    groups: list[str] = []
    for i, r in enumerate(recs):
        for bench, f1s in _benchmark_blocks(r):
            g = f"{r.model} {bench}" if not (several and bench == "OPOPE") else f"{r.model} {bench} ({r.dataset})"
            if g not in groups:
                groups.append(g)
            for split, f1 in f1s.items():
                by_seed[(keys[i], g, split)][r.seed].append(f1)
    columns: list[tuple[str, Metric]] = []
    for g in groups:
        present = {s for (_, gg, s) in by_seed if gg == g}
        splits = [s for s in POPE_SPLITS if s in present] + sorted(present - set(POPE_SPLITS))
        columns += [(g, _split_metric(s)) for s in splits]
        if all(s in present for s in POPE_SPLITS):
            columns.append((g, _split_metric("mean")))
    table = GroupedTable(
        title="Table 2: POPE / OPOPE F1 (%) per split",
        row_headers=ROW_HEADERS,
        rows=_order_rows(keys.values(), method_of, None),
        columns=columns,
    )
    for (row, g, split), seeds in by_seed.items():
        table.cells[(row, g, f"F1.{split}")] = Cell(_seed_means(seeds))
    for row in table.rows:
        for g in groups:
            per_split = [by_seed.get((row, g, s), {}) for s in POPE_SPLITS]
            seeds = set.intersection(*(set(d) for d in per_split)) if all(per_split) else set()
            if seeds:
                avgs = [mean(mean(d[s]) for d in per_split) for s in sorted(seeds, key=str)]
                table.cells[(row, g, "F1.mean")] = Cell(avgs)
    return table
