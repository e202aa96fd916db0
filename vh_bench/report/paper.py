"""The two comparison tables in the layout of the VASparse paper (arXiv 2501.06553).

- Table 1 (`chair_table`): methods as rows; per model a column group CHAIR_I, CHAIR_S, tokens/s
  (the headline decode TPS of metrics.md §5), plus `TPS ×` relative to `--baseline` when given.
- Table 2 (`pope_table`): methods as rows; per model and benchmark (POPE per source, OPOPE) the F1
  of each split and their average.

A row is one method configuration: the method's label, its decoding setting and the
hyperparameters that vary between runs of that method (and `limit=N` for a run limited by
`runtime.limit`). Runs differing only in `seed` share a row and the cell shows mean ± sample std over
seeds; a cell of one run shows its 95 % bootstrap interval over images `[low, high]`.

A column holds runs over one sample set and one `max_new_tokens`: anything else is refused
(`MixedRunsError`) unless `allow_mixed`, and then the odd runs are marked ‡. With a baseline, each
single-run cell is compared with the baseline's on the same images (paired bootstrap interval of the
difference, paired permutation p-value, `vh_bench.metrics.stats`); `*` marks a difference whose
interval excludes 0, and the comparisons are listed in `comparisons` (the report's paired table).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from statistics import mean
from typing import Any

from vh_bench.metrics.intervals import BootstrapSettings, UnitTable, chair_statistics, compare, confusion_statistics
from vh_bench.metrics.pope import SPLITS as POPE_SPLITS
from vh_bench.metrics.stats import NotPairedError, Statistic, f_beta_statistic
from vh_bench.report.layout import Cell, GroupedTable, Metric
from vh_bench.report.records import RunRecord

ROW_HEADERS = ("Method", "Decoding", "Setting")
NOT_COMPARABLE = "†"
MIXED = "‡"
SIGNIFICANT = "*"
UNPARSED = "§"
DISAGREE = "¶"
SUBSET = "°"

CHAIR_I = Metric("CHAIR_I", "CHAIR_I ↓", r"CHAIR$_I\downarrow$", 1)
CHAIR_S = Metric("CHAIR_S", "CHAIR_S ↓", r"CHAIR$_S\downarrow$", 1)
TPS = Metric("decode_tps", "tokens/s ↑", r"Tokens/s$\uparrow$", 2)
TPS_RATIO = Metric("decode_tps_ratio", "TPS ×", r"TPS$\times$", 2, ratio=True)
N = Metric("n", "n", r"$n$", 0, spread=False)
MAX_NEW = Metric("max_new", "max new", "Max new", 0, spread=False)
LEN = Metric("Len", "Len", "Len", 1)
TABLE1_METRICS = (N, MAX_NEW, LEN, CHAIR_I, CHAIR_S, TPS)


class MixedRunsError(ValueError):
    """Runs over different sample sets or lengths would share a table column."""

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
    parts = [f"{k}={_short(rec.hyper.get(k))}" for k in keys]
    if rec.limit is not None:
        parts.append(f"limit={rec.limit}")  # runtime.limit: the first N samples only
    return ", ".join(parts)


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


# ---- shared: column checks, cells, paired comparisons ----------------------------------------
def _row_name(row: tuple[str, ...]) -> str:
    return " ".join(p for p in row if p)


def _sample_text(rec: RunRecord) -> str:
    return f"{rec.describe_samples()} [{rec.sample_set[:8]}]"


def mixed_runs(
    table: str, columns: dict[str, list[tuple[tuple[str, ...], RunRecord]]], allow_mixed: bool
) -> tuple[set[int], list[str]]:
    """(ids of the records off their column's majority sample set and length, notes).

    Without `allow_mixed` a column with more than one (sample set, max_new_tokens) is an error."""
    marked: set[int] = set()
    notes: list[str] = []
    for col, entries in columns.items():
        by_key: dict[Any, list[tuple[tuple[str, ...], RunRecord]]] = defaultdict(list)
        for row, r in entries:
            by_key[r.sample_key].append((row, r))
        if len(by_key) <= 1:
            continue
        parts = "; ".join(
            f"{_sample_text(es[0][1])}: {', '.join(sorted({_row_name(row) for row, _ in es}))}" for es in by_key.values()
        )
        if not allow_mixed:
            raise MixedRunsError(
                f"{table} column {col!r} mixes runs over different sample sets or lengths ({parts}); "
                f"report them separately, or pass --allow-mixed to show them together (marked {MIXED})"
            )
        majority = max(by_key, key=lambda k: (len(by_key[k]), by_key[k][0][1].n_samples or 0))
        for k, es in by_key.items():
            if k != majority:
                marked.update(id(r) for _, r in es)
        notes.append(f"{MIXED} {col}: run over other samples or length than the column's "
                     f"{_sample_text(by_key[majority][0][1])} ({parts}); not comparable with the other rows.")  # fmt: skip
    return marked, notes


def _cell(values: dict[Any, list[float]], sources: list[RunRecord], flag: str, interval_of: Any) -> Cell:
    cell = Cell(_seed_means(values), flag, sources=list(sources))
    if len(sources) == 1:
        iv = interval_of(sources[0])
        if iv is not None and iv.low is not None and iv.high is not None:
            cell.interval = (iv.low, iv.high)
    return cell


def _baseline_row(table: GroupedTable, base_rows: list[tuple[str, ...]], g: str, key: str, row: tuple[str, ...]) -> tuple[str, ...] | None:
    """The baseline row of `row` in group `g`: same decoding (and, among several, the one over the
    same samples and length, e.g. not a `limit=N` run), else the group's only baseline row."""
    with_cell = [b for b in base_rows if table.cell(b, g, key) is not None]
    same = [b for b in with_cell if b[1] == row[1]]
    if len(same) > 1:
        mine = {r.sample_key for r in table.cell(row, g, key).sources}  # type: ignore[union-attr]
        same = [b for b in same if {r.sample_key for r in table.cell(b, g, key).sources} == mine]  # type: ignore[union-attr]
    return same[0] if len(same) == 1 else (with_cell[0] if len(with_cell) == 1 else None)


def add_comparisons(
    table: GroupedTable,
    method_of: dict[tuple[str, ...], str],
    baseline: str,
    tests: dict[str, tuple[Statistic, Any]],
    settings: BootstrapSettings,
) -> None:
    """Paired comparison of each single-run cell with the baseline's (same group, same images).

    `tests`: metric key → (statistic on unit sums, function record → UnitTable or None). A `*` is
    added to cells whose difference interval excludes 0; every comparison is kept in `table.comparisons`.
    """
    base_rows = [r for r in table.rows if method_of[r] == baseline]
    skipped: dict[str, int] = defaultdict(int)
    for g in table.groups:
        for key, (stat, units_of) in tests.items():
            for row in table.rows:
                c = table.cell(row, g, key)
                if c is None or method_of[row] == baseline:
                    continue
                base = _baseline_row(table, base_rows, g, key, row)
                if base is None:
                    continue
                b = table.cell(base, g, key)
                assert b is not None
                if len(c.sources) != 1 or len(b.sources) != 1:
                    skipped["several seeds in a cell"] += 1
                    continue
                ua: UnitTable | None = units_of(c.sources[0])
                ub: UnitTable | None = units_of(b.sources[0])
                if ua is None or ub is None:
                    skipped["no per-image counts in results.json"] += 1
                    continue
                try:
                    cmp = compare(ua, ub, stat, settings).scaled(100.0)
                except NotPairedError as exc:
                    skipped[str(exc).split(" (")[0]] += 1
                    continue
                if cmp.excludes_zero:
                    c.flag += SIGNIFICANT
                table.comparisons.append({
                    **cmp.as_dict(), "baseline_value": cmp.baseline, "baseline": _row_name(base),
                    "column": g, "metric": key, "method": row[0], "decoding": row[1], "setting": row[2],
                })  # fmt: skip
    if any(SIGNIFICANT in c.flag for c in table.cells.values()):
        table.notes.append(
            f"{SIGNIFICANT} differs from {baseline} on the same images: the 95% paired bootstrap interval of the "
            f"difference excludes 0 ({settings.n_resamples} resamples, seed {settings.seed}; p-values from a paired "
            "permutation test in the paired table)."
        )
    for why, n in sorted(skipped.items()):
        table.notes.append(f"{n} cell(s) not compared with {baseline}: {why}.")


# ---- Table 1 ---------------------------------------------------------------------------------
def chair_table(
    records: Sequence[RunRecord],
    *,
    baseline: str | None = None,
    allow_mixed: bool = False,
    settings: BootstrapSettings = BootstrapSettings(),
) -> GroupedTable:
    recs = [r for r in records if "CHAIR_S" in r.metrics or "CHAIR_I" in r.metrics]
    keys = row_keys(recs)
    several = len({r.dataset for r in recs}) > 1
    method_of = {keys[i]: r.method for i, r in enumerate(recs)}
    columns: dict[str, list[tuple[tuple[str, ...], RunRecord]]] = defaultdict(list)
    for i, r in enumerate(recs):
        columns[column_group(r, several)].append((keys[i], r))
    marked, mixed_notes = mixed_runs("Table 1", columns, allow_mixed)
    values: dict[tuple[tuple[str, ...], str, str], dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    sources: dict[tuple[tuple[str, ...], str, str], list[RunRecord]] = defaultdict(list)
    flags: dict[tuple[tuple[str, ...], str, str], str] = defaultdict(str)
    envs: dict[str, set[str]] = defaultdict(set)

    def put(k: tuple[tuple[str, ...], str, str], r: RunRecord, v: float | None) -> None:
        if v is None:
            return
        values[k][r.seed].append(float(v))
        sources[k].append(r)
        if id(r) in marked and MIXED not in flags[k]:
            flags[k] += MIXED

    for i, r in enumerate(recs):
        g = column_group(r, several)
        put((keys[i], g, N.key), r, r.n_scored)
        put((keys[i], g, MAX_NEW.key), r, r.max_new)
        put((keys[i], g, LEN.key), r, r.metrics.get("Len"))
        for m in (CHAIR_I, CHAIR_S):
            put((keys[i], g, m.key), r, r.metrics.get(m.key))
        if r.decode_tps is not None:
            put((keys[i], g, TPS.key), r, r.decode_tps)
            envs[g].add(r.env)
            if not r.speed_comparable and NOT_COMPARABLE not in flags[(keys[i], g, TPS.key)]:
                flags[(keys[i], g, TPS.key)] += NOT_COMPARABLE
    groups = list(dict.fromkeys(column_group(r, several) for r in recs))
    metrics = list(TABLE1_METRICS) + ([TPS_RATIO] if baseline else [])
    table = GroupedTable(
        title="Table 1: CHAIR (%) and decoding speed (tokens/s after the first token)",
        row_headers=ROW_HEADERS,
        rows=_order_rows(keys.values(), method_of, baseline),
        columns=[(g, m) for g in groups for m in metrics],
    )
    for k, seeds in values.items():
        metric = k[2]
        table.cells[k] = _cell(seeds, sources[k], flags.get(k, ""), lambda r, m=metric: r.ci.get(m))
        if metric == N.key:
            failed = sum(r.n_errors for r in sources[k])
            if failed:
                table.cells[k].suffix = f"({failed} failed)"
    if baseline:
        _add_ratios(table, method_of, baseline)
        stats = chair_statistics()
        add_comparisons(table, method_of, baseline, {
            CHAIR_S.key: (stats["CHAIRs"], lambda r: r.units),
            CHAIR_I.key: (stats["CHAIRi"], lambda r: r.units),
        }, settings)  # fmt: skip
    table.notes.append("n: samples scored (failed ones left out and counted); Len: mean caption length in tokens.")
    table.notes += mixed_notes
    if any(NOT_COMPARABLE in f for f in flags.values()):
        table.notes.append(f"{NOT_COMPARABLE} timings mix devices or settings (resumed run): not comparable.")
    for g in groups:
        if len(envs[g]) > 1:
            table.notes.append(f"{g}: tokens/s measured on different setups ({'; '.join(sorted(envs[g]))}): compare ratios within one setup only.")
    if any(r.limit is not None for r in recs):
        table.notes.append("limit=N: a run over the first N samples only (runtime.limit), not the whole dataset.")
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
        for row in table.rows:
            c = table.cell(row, g, TPS.key)
            if c is None:
                continue
            base = _baseline_row(table, base_rows, g, TPS.key, row)
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


def opope_label(r: RunRecord) -> str:
    """`OPOPE F1 (gt_cache)`, `OPOPE F0.2 (pope_segmentation)`: the score and the object source."""
    f = "F1" if r.opope_beta == 1.0 else f"F{r.opope_beta:g}"
    return f"OPOPE {f} ({r.opope_source or '?'})"


def _benchmark_blocks(r: RunRecord) -> list[tuple[str, dict[str, float], str]]:
    out = []
    if r.pope:
        out.append((f"POPE {r.pope_source}" if r.pope_source else "POPE", r.pope, "pope"))
    if r.opope:
        out.append((opope_label(r), r.opope, "opope"))
    return out


def _pope_flags(r: RunRecord) -> tuple[str, bool]:
    f = r.pope_flags
    flag = (UNPARSED if f.mostly_unparseable else "") + (DISAGREE if f.n_parser_disagree else "") + (SUBSET if f.answered_subset else "")
    return flag, f.mostly_unparseable


def pope_table(
    records: Sequence[RunRecord],
    *,
    baseline: str | None = None,
    allow_mixed: bool = False,
    settings: BootstrapSettings = BootstrapSettings(),
) -> GroupedTable:
    """F1 (%) per split (OPOPE: F-β); `Avg.` is, per seed, the mean over the three splits, then mean ± std over seeds."""
    recs = [r for r in records if r.pope or r.opope]
    keys = row_keys(recs)
    several = len({r.dataset for r in recs if r.opope}) > 1
    method_of = {keys[i]: r.method for i, r in enumerate(recs)}
    # (row, group, split) → seed → F1; POPE runs are one split each, OPOPE runs carry all three.
    by_seed: dict[tuple[tuple[str, ...], str, str], dict[Any, list[float]]] = defaultdict(lambda: defaultdict(list))
    sources: dict[tuple[tuple[str, ...], str, str], list[RunRecord]] = defaultdict(list)
    kind: dict[str, str] = {}
    groups: list[str] = []
    columns: dict[str, list[tuple[tuple[str, ...], RunRecord]]] = defaultdict(list)
    for i, r in enumerate(recs):
        for bench, f1s, what in _benchmark_blocks(r):
            g = f"{r.model} {bench}" if not (several and what == "opope") else f"{r.model} {bench} ({r.dataset})"
            kind[g] = what
            if g not in groups:
                groups.append(g)
            if what == "opope":
                columns[g].append((keys[i], r))  # all splits come from the same captions
            for split, f1 in f1s.items():
                by_seed[(keys[i], g, split)][r.seed].append(f1)
                sources[(keys[i], g, split)].append(r)
                if what == "pope":
                    columns[f"{g} {split}"].append((keys[i], r))  # each split is its own question set
    marked, mixed_notes = mixed_runs("Table 2", columns, allow_mixed)
    cols: list[tuple[str, Metric]] = []
    for g in groups:
        present = {s for (_, gg, s) in by_seed if gg == g}
        splits = [s for s in POPE_SPLITS if s in present] + sorted(present - set(POPE_SPLITS))
        cols += [(g, _split_metric(s)) for s in splits]
        if all(s in present for s in POPE_SPLITS):
            cols.append((g, _split_metric("mean")))
    table = GroupedTable(
        title="Table 2: POPE F1 and OPOPE F-β (%) per split",
        row_headers=ROW_HEADERS,
        rows=_order_rows(keys.values(), method_of, baseline),
        columns=cols,
    )
    for (row, g, split), seeds in by_seed.items():
        srcs = sources[(row, g, split)]
        flag = MIXED if any(id(r) in marked for r in srcs) else ""
        unreliable = False
        if kind[g] == "pope":
            for r in srcs:
                f, u = _pope_flags(r)
                flag += "".join(ch for ch in f if ch not in flag)
                unreliable |= u
            iv_of = lambda r, s=split: r.pope_ci.get(s)  # noqa: E731
        else:
            iv_of = lambda r, s=split: r.opope_ci.get(s)  # noqa: E731
        cell = _cell(seeds, srcs, flag, iv_of)
        cell.unreliable = unreliable
        table.cells[(row, g, f"F1.{split}")] = cell
    for row in table.rows:
        for g in groups:
            per_split = [by_seed.get((row, g, s), {}) for s in POPE_SPLITS]
            seeds = set.intersection(*(set(d) for d in per_split)) if all(per_split) else set()
            if seeds:
                avgs = [mean(mean(d[s]) for d in per_split) for s in sorted(seeds, key=str)]
                parts = [table.cell(row, g, f"F1.{s}") for s in POPE_SPLITS]
                flag = "".join(dict.fromkeys(ch for p in parts if p is not None for ch in p.flag if ch != SIGNIFICANT))
                table.cells[(row, g, "F1.mean")] = Cell(avgs, flag, unreliable=any(p is not None and p.unreliable for p in parts))
    if baseline:
        pope_f1 = confusion_statistics()["f1"]
        # The statistic depends on the group (POPE F1, OPOPE F-β with its β): compare group by group.
        for g in groups:
            sub = GroupedTable(table.title, table.row_headers, table.rows, [c for c in table.columns if c[0] == g],
                               {k: v for k, v in table.cells.items() if k[1] == g})  # fmt: skip
            if kind[g] == "opope":
                beta = next(r.opope_beta for k, rs in sources.items() if k[1] == g for r in rs)
                stat, units = f_beta_statistic(beta), (lambda r, s: r.opope_units.get(s))
            else:
                stat, units = pope_f1, (lambda r, s: r.pope_units.get(s))
            tests = {f"F1.{s}": (stat, lambda r, s=s, u=units: u(r, s)) for s in POPE_SPLITS}
            add_comparisons(sub, method_of, baseline, tests, settings)
            table.comparisons += sub.comparisons
            table.notes += [n for n in sub.notes if n not in table.notes]
    table.notes += mixed_notes
    _pope_notes(table, recs)
    if any(r.limit is not None for r in recs):
        table.notes.append("limit=N: a run over the first N samples (questions) only (runtime.limit).")
    return table


def _pope_notes(table: GroupedTable, recs: Sequence[RunRecord]) -> None:
    flags = "".join(c.flag for c in table.cells.values())
    if UNPARSED in flags:
        table.notes.append(f"{UNPARSED} most answers show no clear yes/no: the value in parentheses is the parser's "
                           "default answer, not a score.")  # fmt: skip
    if DISAGREE in flags:
        n = sum(r.pope_flags.n_parser_disagree for r in recs)
        table.notes.append(f"{DISAGREE} the POPE parser read {n} answer(s) differently from their case/punctuation-"
                           "insensitive reading (e.g. 'NO.' or 'No!' counted as yes): see n_parser_disagree.")  # fmt: skip
    if SUBSET in flags:
        parts = ", ".join(sorted({f"{r.pope_flags.n_scored}/{r.pope_flags.n_questions}" for r in recs if r.pope_flags.answered_subset}))
        table.notes.append(f"{SUBSET} scored on the answered questions only ({parts} scored): failed or missing answers left out.")
    if any(r.opope for r in recs):
        table.notes.append("OPOPE is scored from captions (metrics.md §4): never comparable with POPE; the column names the "
                           "score (F1, or F-β with β) and the object source.")  # fmt: skip
