"""Speed aggregates (metrics.md §5): ratios of sums over timed samples, never means of ratios."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median
from typing import Any


@dataclass(frozen=True)
class Timing:
    n_new_tokens: int
    t_prefill_s: float
    t_decode_s: float


def _percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), without importing numpy here."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def speed_summary(timings: Sequence[Timing]) -> dict[str, Any]:
    """Aggregate already-filtered (timed, warm-up excluded) samples."""
    n_decode = sum(max(t.n_new_tokens - 1, 0) for t in timings)
    t_decode = sum(t.t_decode_s for t in timings)
    n_all = sum(t.n_new_tokens for t in timings)
    t_all = sum(t.t_prefill_s + t.t_decode_s for t in timings)
    prefill_ms = [t.t_prefill_s * 1000 for t in timings]
    per_tok = [t.t_decode_s * 1000 / (t.n_new_tokens - 1) for t in timings if t.n_new_tokens >= 2]
    return {
        "n_timed": len(timings),
        "decode_tokens": n_decode,
        "decode_tokens_per_s": n_decode / t_decode if t_decode > 0 else None,
        "e2e_tokens_per_s": n_all / t_all if t_all > 0 else None,
        "prefill_ms_mean": sum(prefill_ms) / len(prefill_ms) if prefill_ms else None,
        "prefill_ms_p50": median(prefill_ms) if prefill_ms else None,
        "decode_ms_per_token_p50": _percentile(per_tok, 0.5),
        "decode_ms_per_token_p90": _percentile(per_tok, 0.9),
        "mean_new_tokens": n_all / len(timings) if timings else None,
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def speed_from_rows(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Speed over sample lines: errors and warm-up samples (`warmup: true`) are excluded.

    `comparable` is false when the timed lines were taken on more than one device or timing
    environment (`speed_env`: device, dtype, attention, threads, versions), e.g. a run resumed
    elsewhere: their sums mix machines, so the aggregate describes neither.
    """
    timed_rows = [r for r in rows if not r.get("error") and not r.get("warmup")]
    timed = [Timing(int(r["n_new_tokens"]), float(r["t_prefill_s"]), float(r["t_decode_s"])) for r in timed_rows]
    out = speed_summary(timed)
    out["n_warmup"] = sum(1 for r in rows if r.get("warmup") and not r.get("error"))
    devices = sorted({str(r.get("device")) for r in timed_rows if r.get("device")})
    envs = {_canonical(r["speed_env"]): r["speed_env"] for r in timed_rows if r.get("speed_env") is not None}
    reasons = []
    if len(devices) > 1:
        reasons.append(f"timed on {len(devices)} devices")
    if len(envs) > 1:
        differing = sorted({k for e in envs.values() for k in e if len({_canonical(x.get(k)) for x in envs.values()}) > 1})
        reasons.append(f"timed under {len(envs)} settings (differ in {', '.join(differing)})")
    out["comparable"] = not reasons
    out["not_comparable_because"] = "; ".join(reasons) or None
    out["devices"] = devices
    out["environments"] = [envs[k] for k in sorted(envs)]
    return out
