"""Per-scene indicators of the testbed's rates and their bootstrap intervals.

- planted rate: probe scenes (A present, B absent) whose caption names B;
- control rate: P(caption names B | neither A nor B present), over control scenes × planted pairs;
- mentions are CHAIR's own object words (synonym table, opera dialect), so "names B" means what
  CHAIR would count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from vh_bench.scenes.catalogue import PLANTED_PAIRS


@dataclass(frozen=True)
class Rate:
    value: float
    low: float
    high: float
    n: int

    def fmt(self, pct: bool = True) -> str:
        if pct:
            return f"{self.value * 100:.1f} [{self.low * 100:.1f}, {self.high * 100:.1f}]"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"

    def as_dict(self) -> dict:
        return {"value": self.value, "ci95": [self.low, self.high], "n": self.n}


def bootstrap_mean(values: Sequence[float], *, n_resamples: int = 2000, seed: int = 0) -> Rate:
    """Mean with a 95 % percentile bootstrap interval (resampling the units, seeded)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Rate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_resamples, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [0.025, 0.975])
    return Rate(float(x.mean()), float(lo), float(hi), int(x.size))


def mention_lists(texts: Mapping[int, str], dialect: str = "opera", synonyms=None) -> dict[int, list[str]]:
    """image id → the COCO categories CHAIR finds in its caption, in order, repeats included
    (CHAIR_I counts every mention)."""
    from vh_bench.metrics.chair_words import caption_to_words, load_synonyms

    syn = synonyms if synonyms is not None else load_synonyms()
    return {i: list(caption_to_words(t, dialect, syn).node_words) for i, t in texts.items()}


def mentions(texts: Mapping[int, str], dialect: str = "opera", synonyms=None) -> dict[int, set[str]]:
    """image id → the set of COCO categories CHAIR finds in its caption."""
    return {i: set(words) for i, words in mention_lists(texts, dialect, synonyms).items()}


def planted_indicators(said: Mapping[int, set[str]], partners: Mapping[int, tuple[str, str]]) -> list[float]:
    return [float(partners[i][1] in words) for i, words in said.items()]


def control_indicators(said: Mapping[int, set[str]], present: Mapping[int, Iterable[str]]) -> list[float]:
    """Per scene: the share of planted pairs with neither member present whose B is named."""
    out = []
    for i, words in said.items():
        here = set(present[i])
        eligible = [b for a, b in PLANTED_PAIRS if a not in here and b not in here]
        if eligible:
            out.append(sum(b in words for b in eligible) / len(eligible))
    return out
