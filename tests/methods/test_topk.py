"""Top-K (methods.md §5, §8.4): FastV's machinery ranking at `layer`, keeping `keep_ratio`."""

from __future__ import annotations

import math

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


# ---- mode=decode: VASparse's per-step selection with λ = 0 (the second reading of §5) ------------
def _topk_decode_reference(adapter, inputs, keep_ratio: float, first_layer: int, n_new: int, monkeypatch):
    """Greedy decoding of the stock eager model whose decode-step attention, in layers ≥ first_layer,
    keeps per head the top ceil(S·n) of the n earlier keys by s² (plain formula, written here) and
    always the current key. Independent of the harness's attention-control code."""
    from transformers.models.llama import modeling_llama

    eager = modeling_llama.eager_attention_forward

    def attn(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
        if query.shape[2] != 1 or module.layer_idx < first_layer:
            return eager(module, query, key, value, attention_mask, scaling, dropout, **kw)
        k = modeling_llama.repeat_kv(key, module.num_key_value_groups)
        v = modeling_llama.repeat_kv(value, module.num_key_value_groups)
        s = (torch.matmul(query, k.transpose(2, 3)) * scaling).float()  # (1, H, 1, N)
        n = s.shape[-1] - 1
        n_keep = min(n, math.ceil(keep_ratio * n - 1e-9))
        earlier = s[..., :n].square()
        masked = s.clone()
        for h in range(s.shape[1]):
            vals = earlier[0, h, 0].tolist()  # rank by s², ties to the earlier key
            order = sorted(range(n), key=lambda j: (-vals[j], j))
            for j in order[n_keep:]:
                masked[0, h, 0, j] = torch.finfo(torch.float32).min
        p = torch.softmax(masked, dim=-1).to(query.dtype)
        return torch.matmul(p, v).transpose(1, 2).contiguous(), p

    monkeypatch.setattr(modeling_llama, "eager_attention_forward", attn)
    cache = adapter.new_cache()
    logits = []
    with torch.inference_mode():
        out = adapter.forward(cache=cache, input_ids=inputs.input_ids, pixel_values=inputs.pixel_values)
        z = adapter.last_logits(out)[0]
        logits.append(z)
        toks = [int(z.argmax())]
        while len(toks) < n_new:
            out = adapter.forward(cache=cache, input_ids=torch.tensor([[toks[-1]]]))
            z = adapter.last_logits(out)[0]
            logits.append(z)
            toks.append(int(z.argmax()))
    monkeypatch.setattr(modeling_llama, "eager_attention_forward", eager)
    return toks, logits


# Low keep ratios: on the tiny model's peaked attention, dropping a quarter of the keys (those with
# s ≈ 0) moves the logits by ~5e-5, below the comparison tolerance, so it would prove nothing.
@pytest.mark.parametrize("keep_ratio, layer", [(0.2, 0), (0.1, 2)])
def test_decode_mode_equals_a_plain_per_step_top_k_on_eager_attention(
    tiny_adapter_eager, tiny_adapter, inputs, keep_ratio, layer, monkeypatch
):
    n_new = 8
    got = run_method(TopK(keep_ratio=keep_ratio, layer=layer, mode="decode"), tiny_adapter, inputs,
                     GenConfig(strategy="greedy", max_new_tokens=n_new))  # fmt: skip
    ref_tokens, ref_logits = _topk_decode_reference(tiny_adapter_eager, inputs, keep_ratio, layer, n_new, monkeypatch)
    assert len(got.z) == len(ref_logits) == n_new
    for a, b in zip(got.z, ref_logits):
        torch.testing.assert_close(a[0], b, rtol=1e-4, atol=1e-4)
    assert got.tokens == ref_tokens
    # the selection acts (100× the tolerance): keeping every key gives other logits
    full = run_method(TopK(keep_ratio=1.0, mode="decode"), tiny_adapter, inputs, GenConfig(max_new_tokens=n_new))
    assert max(float((a - b).abs().max()) for a, b in zip(got.z[1:], full.z[1:])) > 1e-2


def test_decode_mode_config_and_fingerprint():
    method = build_method(compose(["method=topk", "method.mode=decode"]))
    assert method == TopK(mode="decode") and method.fingerprint()["mode"] == "decode"
    vas = method.decode_selection(4)
    assert (vas.lam, vas.alpha, vas.beta, vas.sparsity) == (0.0, 0.0, 0.0, 0.75)
    assert (vas.vats.scope, vas.vats.merge, vas.vats.layers) == ("all", "none", [0, 1, 2, 3])
    assert not vas.svcd.enabled and not vas.sap.enabled
    assert TopK(layer=-2, mode="decode").decode_selection(4).vats.layers == [2, 3]
