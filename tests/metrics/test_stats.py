"""Bootstrap intervals and paired tests (vh_bench.metrics.stats) against references written here
with plain numpy: the same seeded index draws, the formulas of metrics.md, no vh_bench helpers."""

from __future__ import annotations

import numpy as np
import pytest

from vh_bench.metrics.intervals import UnitTable, chair_statistics, chair_units, compare, intervals
from vh_bench.metrics.stats import (
    NotPairedError,
    align_units,
    bootstrap_f_beta,
    bootstrap_mean,
    bootstrap_ratio,
    f_beta,
    paired_comparison,
    ratio_statistic,
)

R, SEED = 500, 7


def _reference_indices(n: int, n_resamples: int = R, seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def test_bootstrap_mean_equals_a_plain_numpy_percentile_bootstrap() -> None:
    x = np.array([1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1], dtype=float)
    iv = bootstrap_mean(x, n_resamples=R, seed=SEED)
    means = x[_reference_indices(len(x))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    assert iv.estimate == x.mean()
    assert (iv.low, iv.high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert (iv.n_resamples, iv.seed, iv.level, iv.n_units) == (R, SEED, 0.95, 20)
    # The seed is honoured: another seed gives other draws, the same seed the same interval.
    assert bootstrap_mean(x, n_resamples=R, seed=SEED) == iv
    assert bootstrap_mean(x, n_resamples=R, seed=SEED + 1) != iv


def test_chair_i_is_a_ratio_of_sums_on_every_resample() -> None:
    # Captions with very different mention counts: the mean of per-caption ratios differs a lot.
    halluc = np.array([0, 5, 0, 1, 0, 0, 2, 0], dtype=float)
    mentions = np.array([1, 10, 2, 1, 3, 1, 4, 2], dtype=float)
    iv = bootstrap_ratio(halluc, mentions, n_resamples=R, seed=SEED)
    idx = _reference_indices(len(halluc))
    ratios = halluc[idx].sum(axis=1) / mentions[idx].sum(axis=1)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    assert iv.estimate == 8 / 24
    assert (iv.low, iv.high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    mean_of_ratios = np.percentile((halluc / mentions)[idx].mean(axis=1), [2.5, 97.5])
    assert abs(iv.low - mean_of_ratios[0]) > 1e-3  # a mean-of-ratios implementation would fail here


def test_zero_denominator_resamples_are_counted_not_used() -> None:
    # Only unit 0 has mentions: resamples without it have CHAIR_I undefined (0/0).
    iv = bootstrap_ratio([1, 0, 0], [2, 0, 0], n_resamples=R, seed=SEED)
    idx = _reference_indices(3)
    undefined = int((~(idx == 0).any(axis=1)).sum())
    assert iv.n_undefined == undefined > 0
    assert iv.low == iv.high == 0.5


def test_f_beta_formula_and_bootstrap() -> None:
    p, r = 0.8, 4 / 9  # metrics.md §4.5 worked example
    assert f_beta(p, r, 1.0) == 2 * p * r / (p + r)  # bit for bit F1 of §3.7
    assert float(f_beta(p, r, 0.5)) == pytest.approx(1.25 * p * r / (0.25 * p + r), abs=1e-15)
    assert float(f_beta(0.0, 0.0, 1.0)) == 0.0
    with pytest.raises(ValueError):
        f_beta(p, r, 0.0)
    tp = np.array([2, 1, 0, 3, 1, 2])
    fp = np.array([0, 1, 1, 0, 0, 1])
    fn = np.array([1, 2, 3, 0, 2, 1])
    iv = bootstrap_f_beta(tp, fp, fn, beta=0.5, n_resamples=R, seed=SEED)
    idx = _reference_indices(len(tp))
    t, f, n = tp[idx].sum(1), fp[idx].sum(1), fn[idx].sum(1)
    P, Rc = t / (t + f), t / (t + n)
    ref = np.percentile(1.25 * P * Rc / (0.25 * P + Rc), [2.5, 97.5])
    P0, R0 = 9 / 12, 9 / 18
    assert iv.estimate == pytest.approx(1.25 * P0 * R0 / (0.25 * P0 + R0), abs=1e-15)
    assert (iv.low, iv.high) == (pytest.approx(ref[0], abs=1e-12), pytest.approx(ref[1], abs=1e-12))


def test_empty_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        bootstrap_mean([])


def test_paired_identical_runs_give_zero_difference_and_p_one() -> None:
    cols = {"num": [0, 1, 1, 0, 2, 1, 0, 3], "den": [1, 2, 2, 1, 3, 2, 1, 4]}
    c = paired_comparison(cols, cols, ratio_statistic("num", "den"), n_resamples=R, seed=SEED)
    assert c.difference == 0.0 and c.p_value == 1.0
    assert (c.low, c.high) == (0.0, 0.0) and not c.excludes_zero


def test_paired_difference_interval_and_permutation_p_against_numpy() -> None:
    # CHAIR_S of 12 captions: the candidate hallucinates on 2, the baseline on 9 (same images).
    a = np.array([0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0], dtype=float)
    b = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 0, 1], dtype=float)
    one = np.ones_like(a)
    c = paired_comparison({"h": a, "n": one}, {"h": b, "n": one}, ratio_statistic("h", "n"), n_resamples=R, seed=SEED)
    assert c.difference == pytest.approx(2 / 12 - 9 / 12, abs=1e-15)
    # Reference: one generator, the bootstrap rows first, then the swap rows (as documented).
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, 12, size=(R, 12))
    boot = a[idx].mean(1) - b[idx].mean(1)
    swap = rng.integers(0, 2, size=(R, 12)).astype(bool)
    perm = np.where(swap, b, a).mean(1) - np.where(swap, a, b).mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    p = (1 + np.sum(np.abs(perm) >= abs(c.difference) - 1e-12)) / (1 + R)
    assert (c.low, c.high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    assert c.p_value == pytest.approx(p, abs=1e-15)
    assert c.excludes_zero and c.p_value < 0.05


def test_pairs_need_the_same_sample_set() -> None:
    ids = ["coco:1", "coco:2", "coco:3"]
    cols = {"h": [1, 0, 1], "n": [1, 1, 1]}
    with pytest.raises(NotPairedError, match="different sample sets"):
        align_units(ids, cols, ["coco:1", "coco:2", "coco:4"], cols)
    with pytest.raises(NotPairedError):
        align_units([], {"h": [], "n": []}, [], {"h": [], "n": []})
    # Same units in another order: aligned by id, so the comparison is unchanged.
    a = UnitTable("caption", ids, {"h": [1, 0, 1], "n": [1, 1, 1]})
    b = UnitTable("caption", ids, {"h": [0, 0, 1], "n": [1, 1, 1]})
    b_shuffled = UnitTable("caption", [ids[2], ids[0], ids[1]], {"h": [1, 0, 0], "n": [1, 1, 1]})
    stat = ratio_statistic("h", "n")
    assert compare(a, b, stat) == compare(a, b_shuffled, stat)


def test_chair_units_and_intervals_reproduce_the_metrics_md_toy() -> None:
    # metrics.md §1.10 as per-caption records (the fields evaluate_chair writes).
    sentences = [
        {"mscoco_gt_words": ["cat", "dining table", "person"], "mscoco_generated_words": ["cat", "dining table"],
         "metrics": {"n_hallucinated": 0, "n_mentions": 2}},
        {"mscoco_gt_words": ["dog", "person"], "mscoco_generated_words": ["dog", "frisbee", "frisbee"],
         "metrics": {"n_hallucinated": 2, "n_mentions": 3}},
        {"mscoco_gt_words": ["sink", "toilet"], "mscoco_generated_words": ["toilet", "toilet"],
         "metrics": {"n_hallucinated": 0, "n_mentions": 2}},
    ]  # fmt: skip
    units = chair_units(["demo:1", "demo:2", "demo:3"], sentences)
    assert units.columns["covered"] == [2, 1, 1] and units.columns["gt"] == [3, 2, 2]
    ci = intervals(units, chair_statistics())
    assert ci["CHAIRs"]["estimate"] == 1 / 3
    assert ci["CHAIRi"]["estimate"] == 2 / 7
    assert ci["Recall"]["estimate"] == 4 / 7
    assert all(0.0 <= ci[k]["low"] <= ci[k]["estimate"] <= ci[k]["high"] <= 1.0 for k in ci)
    assert UnitTable.from_dict(units.as_dict()) == units
