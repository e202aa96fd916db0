"""Uncertainty of the benchmark numbers: bootstrap intervals and paired comparisons (numpy only).

Every rate vh_bench reports is a function of *sums* of per-unit counts (metrics.md §1.8, §3.7):
CHAIR_I = Σ hallucinated mentions / Σ mentions, POPE F1 from Σ TP, Σ FP, Σ FN, and so on. The unit
that is resampled is the image (a caption, or all the questions about one image), because those are
the independent draws; the statistic of a resample is recomputed from the resampled sums, so CHAIR_I
stays a ratio of sums on every resample and is never a mean of per-caption ratios.

- Intervals are percentile bootstrap intervals (Efron & Tibshirani 1993, §13.3): draw `n_resamples`
  samples of n units with replacement from `numpy.random.default_rng(seed)`, compute the statistic
  on each, take the (1−level)/2 and (1+level)/2 percentiles (numpy's default linear interpolation).
- Paired comparisons of two runs on the same units: the difference (candidate − baseline), its
  paired percentile bootstrap interval (the same resampled units for both runs), and a two-sided
  paired permutation p-value: each unit's two outputs are swapped with probability ½ and
  p = (1 + #{|Δ*| ≥ |Δ|}) / (1 + R) (Good 2005, the +1 keeps p > 0 for a finite R).

Everything is seeded and recorded (`n_resamples`, `seed`, `level`) with the result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
INTERVAL_METHOD = "percentile bootstrap over images"
PAIRED_INTERVAL_METHOD = "paired percentile bootstrap over images"
P_VALUE_METHOD = "paired permutation test (swap each image's two outputs with probability 1/2), two-sided, (1 + #{|d*| >= |d|}) / (1 + R)"
# Rows of resamples drawn at a time: bounds memory at CHUNK × n_units; the draws are the same stream
# (row-major) as drawing all R × n indices at once.
_CHUNK = 256

Sums = Mapping[str, np.ndarray]
Statistic = Callable[[Sums], np.ndarray]


class NotPairedError(ValueError):
    """Two runs cannot be compared unit by unit (different or empty sample sets)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap interval; `low`/`high` are None when undefined."""

    estimate: float | None
    low: float | None
    high: float | None
    level: float = DEFAULT_LEVEL
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    n_units: int = 0
    n_undefined: int = 0  # resamples whose statistic had a zero denominator (left out)
    method: str = INTERVAL_METHOD

    @property
    def half_width(self) -> float | None:
        if self.low is None or self.high is None:
            return None
        return (self.high - self.low) / 2

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (fractions → percent)."""

        def s(x: float | None) -> float | None:
            return None if x is None else x * factor

        return Interval(s(self.estimate), s(self.low), s(self.high), self.level, self.n_resamples, self.seed,
                        self.n_units, self.n_undefined, self.method)  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Interval:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class PairedComparison:
    """candidate − baseline on the same units: difference, paired bootstrap interval, p-value."""

    difference: float
    low: float | None
    high: float | None
    p_value: float
    candidate: float
    baseline: float
    level: float = DEFAULT_LEVEL
    n_resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    n_units: int = 0
    interval_method: str = PAIRED_INTERVAL_METHOD
    p_value_method: str = P_VALUE_METHOD

    @property
    def excludes_zero(self) -> bool:
        """The interval lies entirely above or below 0: the difference is not noise at this level."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def scaled(self, factor: float) -> PairedComparison:
        def s(x: float | None) -> float | None:
            return None if x is None else x * factor

        return PairedComparison(self.difference * factor, s(self.low), s(self.high), self.p_value,
                                self.candidate * factor, self.baseline * factor, self.level, self.n_resamples,
                                self.seed, self.n_units, self.interval_method, self.p_value_method)  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


# ---- building blocks -------------------------------------------------------------------------
def _columns(columns: Mapping[str, Sequence[float] | np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    cols = {k: np.asarray(v, dtype=float) for k, v in columns.items()}
    sizes = {len(v) for v in cols.values()}
    if len(sizes) != 1:
        raise ValueError(f"bootstrap columns differ in length: { {k: len(v) for k, v in cols.items()} }")
    for k, v in cols.items():
        if v.ndim != 1:
            raise ValueError(f"bootstrap column {k!r} must be one-dimensional")
    return cols, sizes.pop()


def _check(n_resamples: int, level: float) -> None:
    if int(n_resamples) < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def resample_sums(columns: Mapping[str, np.ndarray], n_resamples: int, seed: int) -> dict[str, np.ndarray]:
    """Σ of each column over `n_resamples` bootstrap samples of the units (rows drawn with replacement).

    The indices are `default_rng(seed).integers(0, n, size=(n_resamples, n))`, drawn in row chunks.
    """
    cols, n = _columns(columns)
    rng = np.random.default_rng(seed)
    out = {k: np.empty(n_resamples) for k in cols}
    for start in range(0, n_resamples, _CHUNK):
        rows = min(_CHUNK, n_resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        for k, v in cols.items():
            out[k][start : start + rows] = v[idx].sum(axis=1)
    return out


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> tuple[float | None, float | None, int]:
    """(low, high, n_undefined): the percentile interval of the finite values."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    n_undefined = int(values.size - finite.size)
    if finite.size == 0:
        return None, None, n_undefined
    lo, hi = np.percentile(finite, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi), n_undefined


def _scalar(x: np.ndarray | float) -> float | None:
    v = float(np.asarray(x, dtype=float).reshape(-1)[0])
    return v if np.isfinite(v) else None


def bootstrap(
    columns: Mapping[str, Sequence[float] | np.ndarray],
    statistic: Statistic,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Percentile bootstrap interval of `statistic(sums)`, a function of the column sums.

    `statistic` gets a mapping column → array of sums (shape (1,) for the estimate, (R,) for the
    resamples) and returns the statistic per entry, NaN where it is undefined.
    """
    _check(n_resamples, level)
    cols, n = _columns(columns)
    if n == 0:
        raise ValueError("no units to bootstrap (empty input)")
    full = {k: np.array([v.sum()]) for k, v in cols.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        estimate = _scalar(statistic(full))
        stats = np.asarray(statistic(resample_sums(cols, n_resamples, seed)), dtype=float)
    lo, hi, undefined = percentile_interval(stats, level)
    return Interval(estimate, lo, hi, float(level), int(n_resamples), int(seed), n, undefined)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)


def ratio_statistic(numerator: str, denominator: str) -> Statistic:
    """Σ numerator / Σ denominator (NaN on a zero denominator)."""
    return lambda s: _ratio(s[numerator], s[denominator])


def f_beta(precision: np.ndarray, recall: np.ndarray, beta: float = 1.0) -> np.ndarray:
    """F-β = (1+β²)·P·R / (β²·P + R) (van Rijsbergen 1979); 0 where P = R = 0 (metrics.md §0).

    Evaluated as ((1+β²)·P)·R / (β²·P + R): with β = 1 this is bit for bit 2·P·R/(P+R) of §3.7.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    b2 = float(beta) ** 2
    precision, recall = np.asarray(precision, dtype=float), np.asarray(recall, dtype=float)
    den = b2 * precision + recall
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den != 0, (1 + b2) * precision * recall / np.where(den != 0, den, 1.0), 0.0)


def f_beta_statistic(beta: float = 1.0) -> Statistic:
    """F-β from summed TP, FP, FN; precision/recall with a zero denominator are 0 (metrics.md §0)."""

    def stat(s: Sums) -> np.ndarray:
        tp, fp, fn = s["tp"], s["fp"], s["fn"]
        p = np.nan_to_num(_ratio(tp, tp + fp), nan=0.0)
        r = np.nan_to_num(_ratio(tp, tp + fn), nan=0.0)
        return f_beta(p, r, beta)

    return stat


# ---- the small public API (also used by the scenes testbed) ------------------------------------
def bootstrap_ratio(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Interval of Σ numerators / Σ denominators, resampling the (numerator, denominator) pairs."""
    return bootstrap({"num": numerators, "den": denominators}, ratio_statistic("num", "den"),
                     n_resamples=n_resamples, seed=seed, level=level)  # fmt: skip


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Interval of the mean of `values` (a rate when the values are 0/1)."""
    values = np.asarray(values, dtype=float)
    return bootstrap_ratio(values, np.ones_like(values), n_resamples=n_resamples, seed=seed, level=level)


def bootstrap_f_beta(
    tp: Sequence[float] | np.ndarray,
    fp: Sequence[float] | np.ndarray,
    fn: Sequence[float] | np.ndarray,
    *,
    beta: float = 1.0,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Interval:
    """Interval of F-β from per-unit TP/FP/FN counts (e.g. the questions about one image)."""
    return bootstrap({"tp": tp, "fp": fp, "fn": fn}, f_beta_statistic(beta),
                     n_resamples=n_resamples, seed=seed, level=level)  # fmt: skip


# ---- paired comparisons ----------------------------------------------------------------------
def align_units(
    ids_a: Sequence[Any], cols_a: Mapping[str, Sequence[float]], ids_b: Sequence[Any], cols_b: Mapping[str, Sequence[float]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Both runs' columns in the same unit order. Refused unless both cover exactly the same units."""
    ids_a, ids_b = [str(i) for i in ids_a], [str(i) for i in ids_b]
    if len(set(ids_a)) != len(ids_a) or len(set(ids_b)) != len(ids_b):
        raise NotPairedError("unit ids repeat within a run; cannot pair units")
    if not ids_a or not ids_b:
        raise NotPairedError("a run has no scored units")
    if set(ids_a) != set(ids_b):
        common = len(set(ids_a) & set(ids_b))
        raise NotPairedError(f"different sample sets ({len(ids_a)} and {len(ids_b)} units, {common} in common)")
    order_b = {u: i for i, u in enumerate(ids_b)}
    perm = np.array([order_b[u] for u in ids_a])
    a, _ = _columns(cols_a)
    b, _ = _columns(cols_b)
    if set(a) != set(b):
        raise NotPairedError(f"different columns {sorted(a)} and {sorted(b)}")
    return a, {k: v[perm] for k, v in b.items()}


def paired_comparison(
    candidate: Mapping[str, Sequence[float] | np.ndarray],
    baseline: Mapping[str, Sequence[float] | np.ndarray],
    statistic: Statistic,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> PairedComparison:
    """statistic(candidate) − statistic(baseline) on the same units (row i of both = one image).

    Interval: both runs resampled with the same unit indices. p-value: sign-flip permutation (see
    the module docstring); the permutation draws come from the same seeded generator, after the
    bootstrap draws.
    """
    _check(n_resamples, level)
    a, n = _columns(candidate)
    b, nb = _columns(baseline)
    if n != nb or set(a) != set(b):
        raise NotPairedError("paired runs need the same units and columns")
    if n == 0:
        raise NotPairedError("no units to compare (empty input)")
    full_a = {k: np.array([v.sum()]) for k, v in a.items()}
    full_b = {k: np.array([v.sum()]) for k, v in b.items()}
    rng = np.random.default_rng(seed)
    boot = np.empty(n_resamples)
    perm = np.empty(n_resamples)
    diff = {k: b[k] - a[k] for k in a}
    with np.errstate(divide="ignore", invalid="ignore"):
        est_a, est_b = _scalar(statistic(full_a)), _scalar(statistic(full_b))
        for start in range(0, n_resamples, _CHUNK):
            rows = min(_CHUNK, n_resamples - start)
            idx = rng.integers(0, n, size=(rows, n))
            sa = {k: v[idx].sum(axis=1) for k, v in a.items()}
            sb = {k: v[idx].sum(axis=1) for k, v in b.items()}
            boot[start : start + rows] = statistic(sa) - statistic(sb)
        for start in range(0, n_resamples, _CHUNK):
            rows = min(_CHUNK, n_resamples - start)
            swap = rng.integers(0, 2, size=(rows, n)).astype(float)
            # Swapping unit i moves b_i − a_i from b's sum into a's (and back): Σa* = Σa + S·(b − a).
            moved = {k: swap @ diff[k] for k in a}
            sa = {k: full_a[k][0] + moved[k] for k in a}
            sb = {k: full_b[k][0] - moved[k] for k in a}
            perm[start : start + rows] = statistic(sa) - statistic(sb)
    if est_a is None or est_b is None:
        raise NotPairedError("the statistic is undefined on one of the runs (zero denominator)")
    observed = est_a - est_b
    lo, hi, _ = percentile_interval(boot, level)
    finite = perm[np.isfinite(perm)]
    # A tolerance for ties: swapping units with equal outputs reproduces |d| up to rounding.
    tol = 1e-12 * max(1.0, abs(observed))
    p = (1 + int(np.sum(np.abs(finite) >= abs(observed) - tol))) / (1 + finite.size)
    return PairedComparison(observed, lo, hi, float(p), est_a, est_b, float(level), int(n_resamples), int(seed), n)
