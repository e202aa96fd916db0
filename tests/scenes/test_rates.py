"""The testbed's rates and intervals: hand-worked indicators, the bootstrap against a plain loop,
and the CHAIR recount against CHAIR itself."""

from __future__ import annotations

import numpy as np

from vh_bench.scenes.methods_table import bootstrap_ratio, caption_stats
from vh_bench.scenes.rates import bootstrap_mean, control_indicators, mention_lists, planted_indicators


def test_planted_and_control_indicators_by_hand():
    partners = {1: ("fork", "knife"), 2: ("cup", "spoon"), 3: ("mouse", "keyboard")}
    said = {1: {"fork", "knife"}, 2: {"cup"}, 3: {"mouse", "keyboard", "dog"}}
    assert planted_indicators(said, partners) == [1.0, 0.0, 1.0]
    # Control: only the pairs with neither member drawn count; image 5 holds a fork (pair 1 excluded).
    present = {4: ["dog"], 5: ["fork", "cat"]}
    said = {4: {"dog", "spoon"}, 5: {"fork", "cat", "knife"}}
    assert control_indicators(said, present) == [1 / 3, 0.0]


def test_bootstrap_mean_matches_a_plain_loop():
    x = np.array([0, 1, 1, 0, 1, 1, 1, 0, 0, 1], dtype=float)
    r = bootstrap_mean(x, n_resamples=500, seed=7)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, len(x), size=(500, len(x)))
    means = sorted(sum(x[j] for j in row) / len(x) for row in idx)
    assert r.value == 0.6 and r.n == 10
    assert np.isclose(r.low, np.quantile(means, 0.025)) and np.isclose(r.high, np.quantile(means, 0.975))
    const = bootstrap_mean([0.25] * 8)
    assert const.low == const.high == const.value == 0.25


def test_bootstrap_ratio_resamples_units_not_ratios():
    # Σnum/Σden, not the mean of per-unit ratios: (1 + 0) / (1 + 3) = 0.25, not (1 + 0) / 2 = 0.5.
    r = bootstrap_ratio([1, 0], [1, 3], n_resamples=200, seed=0)
    assert r.value == 0.25 and 0.0 <= r.low <= r.high <= 1.0


def test_caption_stats_equal_chair_on_the_same_captions():
    from vh_bench.metrics.chair import evaluate_chair
    from vh_bench.metrics.chair_gt import GroundTruth

    objects = {1: ["dog", "cat"], 2: ["fork"], 3: ["cup", "book", "clock"]}
    texts = {1: "A picture of a dog , a dog and a car .", 2: "A picture of a fork and a knife .", 3: "A picture of a cup ."}
    stats = caption_stats(mention_lists(texts), objects)
    gt = GroundTruth({k: frozenset(v) for k, v in objects.items()}, "test", "", None)
    ref = evaluate_chair(sorted(texts.items()), gt).summary
    assert np.isclose(stats["chair_s"].value, ref["CHAIRs"]) and np.isclose(stats["chair_i"].value, ref["CHAIRi"])
    assert np.isclose(stats["recall"].value, ref["Recall"])
    # By hand: hallucinated car, knife; mentions dog, dog, car, fork, knife, cup → CHAIR_I 2/6.
    assert np.isclose(stats["chair_i"].value, 2 / 6) and np.isclose(stats["chair_s"].value, 2 / 3)
