"""One `RunRecord` per results.json: the fields every table and plot reads, in one place.

results.json stores fractions; records store the percentages the papers print (CHAIR, F1), so the
table and plot code never multiplies by 100 twice. Missing metrics are absent keys, never zeros.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.metrics.intervals import UnitTable
from vh_bench.metrics.stats import Interval


def find_results(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob("results.json") if p.is_file())


def load_results(paths: Iterable[Path]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        try:
            out.append(json.loads(Path(p).read_text()))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: not valid JSON ({exc})") from None
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a.b": 1}; lists become JSON text so they stay hashable and printable."""
    out: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif prefix:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else value
    return out


def _pct(x: Any) -> float | None:
    return None if x is None else 100.0 * float(x)


def opope_key(block: Mapping[str, Any]) -> str:
    """The OPOPE headline of a block: `f1` for β = 1 (HALC), else `f_beta`."""
    beta = block.get("beta")
    return "f1" if beta is None or float(beta) == 1.0 else "f_beta"


def _f1_by_split(block: Any) -> dict[str, float]:
    """F-β (percent; F1 when β = 1) per split of an OPOPE block: `{"splits": {split: {...}}}` or `{split: {...}}`."""
    if not isinstance(block, Mapping):
        return {}
    splits = block.get("splits", block)
    key = opope_key(block)
    return {
        str(s): 100.0 * float(m[key])
        for s, m in splits.items()
        if isinstance(m, Mapping) and m.get(key) is not None
    }


def _interval(block: Any, key: str) -> Interval | None:
    """`block["ci"][key]` in percent, if recorded."""
    if not isinstance(block, Mapping):
        return None
    d = (block.get("ci") or {}).get(key)
    if not isinstance(d, Mapping) or d.get("estimate") is None:
        return None
    return Interval.from_dict(d).scaled(100.0)


def _units(d: Any) -> UnitTable | None:
    return UnitTable.from_dict(d) if isinstance(d, Mapping) and d.get("ids") else None


@dataclass(frozen=True)
class PopeFlags:
    """What a reader of a POPE F1 must know (metrics.md §3.7 diagnostics)."""

    n_parser_disagree: int = 0
    mostly_unparseable: bool = False
    n_unparseable: int = 0
    answered_subset: bool = False
    n_scored: int = 0
    n_questions: int = 0


@dataclass(frozen=True)
class RunRecord:
    model: str
    dataset: str
    task: str
    method: str  # config name (vanilla, fastv, ...): what `--baseline` matches
    label: str  # display name
    hyper: dict[str, Any]  # flattened method hyperparameters
    generation: dict[str, Any]
    seed: int | None
    metrics: dict[str, float] = field(default_factory=dict)  # CHAIR_S, CHAIR_I, Recall, Len (percent / tokens)
    speed: dict[str, Any] = field(default_factory=dict)
    pope: dict[str, float] = field(default_factory=dict)  # split → F1 percent (one split per POPE run)
    pope_source: str | None = None
    opope: dict[str, float] = field(default_factory=dict)  # split → F1 percent
    speed_comparable: bool = True
    env: str = ""  # where the timings were taken (device, dtype, attention): same env = comparable TPS
    run: str = ""
    # Intervals (percent) and per-unit counts: `ci`/`units` for CHAIR (keys CHAIR_S, CHAIR_I, Recall),
    # `pope_ci`/`opope_ci` per split (F1; OPOPE's F-β), `pope_units`/`opope_units` likewise.
    ci: dict[str, Interval] = field(default_factory=dict, compare=False)
    pope_ci: dict[str, Interval] = field(default_factory=dict, compare=False)
    opope_ci: dict[str, Interval] = field(default_factory=dict, compare=False)
    units: UnitTable | None = field(default=None, repr=False, compare=False)
    pope_units: dict[str, UnitTable] = field(default_factory=dict, repr=False, compare=False)
    opope_units: dict[str, UnitTable] = field(default_factory=dict, repr=False, compare=False)
    pope_flags: PopeFlags = field(default_factory=PopeFlags)
    opope_source: str | None = None
    opope_beta: float = 1.0
    n_samples: int | None = None  # samples the run asked for
    n_scored: int | None = None  # scored (failed samples excluded)
    n_errors: int = 0
    limit: int | None = None  # runtime.limit: a run over the first `limit` samples only
    sample_set: str = ""  # identity of the asked-for samples (runs over different ones never share a column)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def max_new(self) -> Any:
        return self.generation.get("max_new_tokens")

    @property
    def sample_key(self) -> tuple[str, Any]:
        """What must be equal for two runs to share a table column: the samples and the length."""
        return (self.sample_set, self.max_new)

    def describe_samples(self) -> str:
        """`12 samples, 64 tok` / `2 samples (limit=2), 64 tok`."""
        lim = f" (limit={self.limit})" if self.limit is not None else ""
        return f"{self.n_samples if self.n_samples is not None else '?'} samples{lim}, {self.max_new} tok"

    @property
    def decode_tps(self) -> float | None:
        v = self.speed.get("decode_tokens_per_s")
        return None if v is None else float(v)


def _speed_env(res: Mapping[str, Any]) -> str:
    dev = res.get("device") or {}
    where = dev.get("gpu") or dev.get("cpu") or dev.get("device") or "?"
    attn = (res.get("attention") or {}).get("plain_kernel", "?")
    return f"{where} | {res.get('dtype', '?')} | {attn}"


def pope_block(metrics: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A POPE run's metrics: under `pope`, or (data.pope's scorer) at the top level of `metrics`."""
    block = metrics.get("pope")
    if isinstance(block, Mapping):
        return block
    if "f1" in metrics and "split" in metrics:
        return metrics
    return None


def run_record(res: Mapping[str, Any]) -> RunRecord:
    metrics_in = res.get("metrics") or {}
    metrics: dict[str, float] = {}
    chair = metrics_in.get("chair") or {}
    for src, dst in (("CHAIRs", "CHAIR_S"), ("CHAIRi", "CHAIR_I"), ("Recall", "Recall")):
        if chair.get(src) is not None:
            metrics[dst] = _pct(chair[src])  # type: ignore[assignment]
    if chair.get("avg_tokens") is not None:
        metrics["Len"] = float(chair["avg_tokens"])
    pope: dict[str, float] = {}
    source = None
    block = pope_block(metrics_in)
    if block is not None and block.get("f1") is not None:
        data = res.get("data") or {}
        split = block.get("split") or data.get("split") or "?"
        source = block.get("source") or data.get("source")
        pope[str(split)] = 100.0 * float(block["f1"])
    speed = dict(res.get("speed") or {})
    ci = {dst: iv for src, dst in (("CHAIRs", "CHAIR_S"), ("CHAIRi", "CHAIR_I"), ("Recall", "Recall"))
          if (iv := _interval(chair, src)) is not None}  # fmt: skip
    units_in = metrics_in.get("units") or {}
    pope_ci: dict[str, Interval] = {}
    pope_units: dict[str, UnitTable] = {}
    flags = PopeFlags()
    if pope and block is not None:
        (split,) = pope
        iv = _interval(block, "f1")
        if iv is not None:
            pope_ci[split] = iv
        u = _units((block.get("units") or units_in).get("pope"))
        if u is not None:
            pope_units[split] = u
        flags = PopeFlags(
            n_parser_disagree=int(block.get("n_parser_disagree") or 0),
            mostly_unparseable=bool(block.get("mostly_unparseable")),
            n_unparseable=int(block.get("n_unparseable") or 0),
            answered_subset=block.get("scored_on") == "answered_subset",
            n_scored=int(block.get("n_scored") or block.get("n") or 0),
            n_questions=int(block.get("n_questions") or block.get("n") or 0),
        )
    op = metrics_in.get("opope") if isinstance(metrics_in.get("opope"), Mapping) else {}
    op_key = opope_key(op)
    opope_ci = {str(s): iv for s, m in (op.get("splits") or {}).items() if (iv := _interval(m, op_key)) is not None}
    opope_units = {str(s): u for s, d in (op.get("units") or {}).items() if (u := _units(d)) is not None}
    n_samples = res.get("n_samples", res.get("n_done"))
    return RunRecord(
        model=str(res.get("model", "?")),
        dataset=str(res.get("dataset", "?")),
        task=str(res.get("task", "?")),
        method=str(res.get("method", "?")),
        label=str(res.get("method_label") or res.get("method", "?")),
        hyper=flatten(res.get("hyperparameters") or {}),
        generation=dict(res.get("generation") or {}),
        seed=None if res.get("seed") is None else int(res["seed"]),
        metrics=metrics,
        speed=speed,
        pope=pope,
        pope_source=None if source is None else str(source),
        opope=_f1_by_split(metrics_in.get("opope")),
        speed_comparable=bool(speed.get("comparable", True)),
        env=_speed_env(res),
        run=Path(str(res.get("run_dir", ""))).name,
        ci=ci,
        pope_ci=pope_ci,
        opope_ci=opope_ci,
        units=_units(units_in.get("chair")),
        pope_units=pope_units,
        opope_units=opope_units,
        pope_flags=flags,
        opope_source=None if not op else op.get("objects_source"),
        opope_beta=float(op.get("beta") or 1.0) if op else 1.0,
        n_samples=None if n_samples is None else int(n_samples),
        n_scored=_n_scored(res, metrics_in, block),
        n_errors=int(res.get("n_errors") or 0),
        limit=_limit(res),
        # Old results.json without `sample_set`: the dataset identity and count stand in for it.
        sample_set=str(res.get("sample_set") or f"{res.get('dataset')}:{json.dumps(res.get('data', {}).get('image_ids_sha256'))}:{n_samples}"),
        raw=dict(res),
    )


def _limit(res: Mapping[str, Any]) -> int | None:
    lim = res.get("limit", ((res.get("config") or {}).get("runtime") or {}).get("limit"))
    return None if lim is None else int(lim)


def _n_scored(res: Mapping[str, Any], metrics: Mapping[str, Any], block: Mapping[str, Any] | None) -> int | None:
    if block is not None and block.get("n_scored") is not None:
        return int(block["n_scored"])
    if metrics.get("n_scored") is not None:
        return int(metrics["n_scored"])
    done = res.get("n_done")
    return None if done is None else int(done) - int(res.get("n_errors") or 0)


def records_from(results: Iterable[Mapping[str, Any]]) -> list[RunRecord]:
    return [run_record(r) for r in results]
