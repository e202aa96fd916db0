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


def _f1_by_split(block: Any) -> dict[str, float]:
    """F1 (percent) per split of an OPOPE block: `{"splits": {split: {...}}}` or `{split: {...}}`."""
    if not isinstance(block, Mapping):
        return {}
    splits = block.get("splits", block)
    return {
        str(s): 100.0 * float(m["f1"])
        for s, m in splits.items()
        if isinstance(m, Mapping) and m.get("f1") is not None
    }


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
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

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
        raw=dict(res),
    )


def records_from(results: Iterable[Mapping[str, Any]]) -> list[RunRecord]:
    return [run_record(r) for r in results]
