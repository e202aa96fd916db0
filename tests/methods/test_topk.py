"""Top-K (methods.md §5, §8.4): FastV's machinery ranking at `layer`, keeping `keep_ratio`."""

from __future__ import annotations

import pytest
import torch

from methods.fastv import FastV
from methods.topk import TopK
from methods.vanilla import Vanilla
from tests.methods.test_fastv import cache_lengths
from tests.stepping import assert_equivalent, run_method
from vh_bench.config import compose
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError
from vh_bench.records import GenConfig
from vh_bench.runner import build_method

GREEDY = GenConfig(strategy="greedy", max_new_tokens=10)
BEAM = GenConfig(strategy="beam", num_beams=3, max_new_tokens=8)
SAMPLE = GenConfig(strategy="sample", max_new_tokens=10)


def test_counts_round_half_up():
    assert (TopK().n_keep(576), TopK().n_keep(256)) == (432, 192)
    assert TopK(keep_ratio=0.5).n_keep(5) == 3


@pytest.mark.parametrize(
    "kwargs, key",
    [({"keep_ratio": 0.0}, "method.keep_ratio"), ({"keep_ratio": 1.5}, "method.keep_ratio"),
     ({"layer": 0.5}, "method.layer"), ({"mode": "drop"}, "method.mode")],
)
def test_bad_values_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        TopK(**kwargs).check(GREEDY)


def test_layer_beyond_the_model_is_a_config_error(tiny_adapter, inputs):
    with pytest.raises(ConfigError, match=r"method\.layer"):
        TopK(layer=tiny_adapter.n_layers).stepper(tiny_adapter, inputs, SampleSeeds(0, "x"))


def test_config_file_carries_every_hyperparameter():
    method = build_method(compose(["method=topk"]))
    assert method == TopK(layer=0, keep_ratio=0.75, mode="physical")
    assert method.fingerprint() == {"method": "topk", "layer": 0, "keep_ratio": 0.75, "mode": "physical"}
    assert build_method(compose(["method=topk", "method.layer=1", "method.keep_ratio=0.5"])) == TopK(1, 0.5)


@pytest.mark.parametrize("gen", [GREEDY, BEAM, SAMPLE], ids=["greedy", "beam3", "sample"])
def test_keep_ratio_1_equals_vanilla(tiny_adapter, inputs, gen):
    topk = run_method(TopK(keep_ratio=1.0), tiny_adapter, inputs, gen)
    assert topk.stepper.pruning.dropped.numel() == 0
    assert_equivalent(topk, run_method(Vanilla(), tiny_adapter, inputs, gen))


@pytest.mark.parametrize("layer", [0, 1])
def test_equals_fastv_at_k_layer_plus_1(tiny_adapter, inputs, layer):
    """Same machinery, same op sequence: identical tokens and bit-identical scores."""
    topk = run_method(TopK(layer=layer, keep_ratio=0.75), tiny_adapter, inputs, GREEDY)
    fastv = run_method(FastV(k=layer + 1, ratio=0.25), tiny_adapter, inputs, GREEDY)
    assert topk.tokens == fastv.tokens
    assert all(torch.equal(a, b) for a, b in zip(topk.z, fastv.z))


@pytest.mark.parametrize("gen", [GREEDY, BEAM], ids=["greedy", "beam3"])
def test_physical_equals_mask(tiny_adapter, inputs, gen):
    phys = run_method(TopK(), tiny_adapter, inputs, gen)
    mask = run_method(TopK(mode="mask"), tiny_adapter, inputs, gen)
    assert phys.stepper.pruning.dropped.numel() == 64
    assert torch.equal(phys.stepper.pruning.keep, mask.stepper.pruning.keep)
    assert_equivalent(phys, mask)


def test_cache_lengths(tiny_adapter, inputs):
    run = run_method(TopK(), tiny_adapter, inputs, GREEDY)
    L, t = inputs.length, len(run.tokens) - 1
    assert cache_lengths(run.stepper) == [L + t] + [L - 256 + 192 + t] * (tiny_adapter.n_layers - 1)


def test_shapes_at_336(tiny_adapter_336, test_image, caption_prompt):
    inputs = tiny_adapter_336.prepare(test_image, caption_prompt)
    gen = GenConfig(max_new_tokens=4)
    phys = run_method(TopK(), tiny_adapter_336, inputs, gen)
    assert phys.stepper.pruning.kept_image.numel() == 432
    L = inputs.length
    assert cache_lengths(phys.stepper)[:2] == [L + 3, L - 576 + 432 + 3]
    assert_equivalent(phys, run_method(TopK(mode="mask"), tiny_adapter_336, inputs, gen))
