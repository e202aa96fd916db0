"""FastV (methods.md §4, §8.4) on the tiny model: 256 image tokens at 224 px, one 336-px shape test."""

from __future__ import annotations

import pytest
import torch

from methods.fastv import FastV
from methods.vanilla import Vanilla
from tests.conftest import tiny_checkpoint
from tests.stepping import TOL, assert_equivalent, margins_ok, replay, run_method
from vh_bench.config import compose
from vh_bench.decoding import attention
from vh_bench.decoding.attention import AttentionController
from vh_bench.decoding.pruning import DroppedKeyMask, rank_image_tokens, round_half_up
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError
from vh_bench.models.cache_kwarg import cache_kwargs
from vh_bench.models.llava import LlavaAdapter
from vh_bench.records import GenConfig
from vh_bench.runner import build_method

GREEDY = GenConfig(strategy="greedy", max_new_tokens=10)
BEAM = GenConfig(strategy="beam", num_beams=3, max_new_tokens=8)
SAMPLE = GenConfig(strategy="sample", max_new_tokens=10)


def cache_lengths(stepper) -> list[int]:
    while not hasattr(stepper, "cache"):  # ControlledStepper → Branch
        stepper = stepper.inner
    cache = stepper.cache
    return [cache.get_seq_length(i) for i in range(len(cache.layers))]


# ---- configuration ------------------------------------------------------------------------------
def test_counts_round_half_up():
    assert (FastV().n_keep(576), FastV().n_keep(256)) == (288, 128)
    assert FastV(ratio=0.25).n_keep(576) == 432
    assert round_half_up(2.5) == 3 and round(2.5) == 2  # never banker's rounding
    assert FastV(ratio=0.5).n_keep(5) == 3


@pytest.mark.parametrize(
    "kwargs, key",
    [({"k": 0}, "method.k"), ({"k": -1}, "method.k"), ({"k": 1.5}, "method.k"), ({"ratio": 1.0}, "method.ratio"),
     ({"ratio": -0.1}, "method.ratio"), ({"mode": "prune"}, "method.mode")],
)
def test_bad_values_are_config_errors(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        FastV(**kwargs).check(GREEDY)


def test_k_beyond_the_model_is_a_config_error(tiny_adapter, inputs):
    with pytest.raises(ConfigError, match=r"method\.k"):
        FastV(k=tiny_adapter.n_layers + 1).stepper(tiny_adapter, inputs, SampleSeeds(0, "x"))


def test_config_file_carries_every_hyperparameter():
    method = build_method(compose(["method=fastv"]))
    assert method == FastV(k=2, ratio=0.5, mode="physical")
    assert method.fingerprint() == {"method": "fastv", "k": 2, "ratio": 0.5, "mode": "physical"}
    swept = build_method(compose(["method=fastv", "method.k=3", "method.ratio=0.25", "method.mode=mask"]))
    assert swept == FastV(k=3, ratio=0.25, mode="mask")


# ---- equivalences -------------------------------------------------------------------------------
@pytest.mark.parametrize("gen", [GREEDY, BEAM, SAMPLE], ids=["greedy", "beam3", "sample"])
def test_ratio0_equals_vanilla(tiny_adapter, inputs, gen):
    fastv = run_method(FastV(ratio=0.0), tiny_adapter, inputs, gen)
    vanilla = run_method(Vanilla(), tiny_adapter, inputs, gen)
    assert fastv.stepper.pruning.dropped.numel() == 0
    assert_equivalent(fastv, vanilla)


@pytest.mark.parametrize("gen", [GREEDY, BEAM], ids=["greedy", "beam3"])
def test_physical_equals_mask(tiny_adapter, inputs, gen):
    phys = run_method(FastV(), tiny_adapter, inputs, gen)
    mask = run_method(FastV(mode="mask"), tiny_adapter, inputs, gen)
    assert torch.equal(phys.stepper.pruning.keep, mask.stepper.pruning.keep)
    assert phys.stepper.pruning.dropped.numel() == 128
    assert_equivalent(phys, mask)
    assert margins_ok(phys.z) or gen.strategy == "beam"  # the greedy token check must not be vacuous
    if gen.strategy == "greedy":
        assert phys.tokens != run_method(Vanilla(), tiny_adapter, inputs, gen).tokens  # pruning acts


def test_physical_cached_equals_masked_full_recompute(tiny_adapter, inputs):
    """Cached physical decoding = one cache-free forward of prompt + generated, dropped keys masked
    in layers ≥ K (same kept set, no re-ranking)."""
    run = run_method(FastV(), tiny_adapter, inputs, GREEDY)
    K, L = 2, inputs.length
    ctrl = AttentionController(tiny_adapter.n_layers)
    ctrl.add_handler(range(K, tiny_adapter.n_layers), DroppedKeyMask(run.stepper.pruning.dropped))
    ids = torch.cat([inputs.input_ids, torch.tensor([run.tokens[:-1]])], dim=1)
    with torch.inference_mode(), attention.control(tiny_adapter, ctrl):
        ctrl.mode = "prefill"
        out = tiny_adapter.model(input_ids=ids, pixel_values=inputs.pixel_values, use_cache=False, logits_to_keep=0)
    torch.testing.assert_close(out.logits[0, L - 1 :].float(), torch.cat(run.z), **TOL)
    assert out.logits[0, L - 1 :].argmax(-1).tolist() == run.tokens


# ---- cache, positions, ranking ------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3])
def test_cache_lengths_follow_the_pruning(tiny_adapter, inputs, k):
    L, n_layers = inputs.length, tiny_adapter.n_layers
    stepper = FastV(k=k).stepper(tiny_adapter, inputs, SampleSeeds(0, "x"))
    n_keep_total = L - 256 + 128
    with torch.inference_mode(), attention.control(tiny_adapter, stepper.controller):
        z = stepper.prefill()
        assert stepper.pruning.keep.numel() == n_keep_total
        assert cache_lengths(stepper) == [L] * k + [n_keep_total] * (n_layers - k)
        for t in range(1, 4):
            z = stepper.step(z.argmax(-1))
            assert cache_lengths(stepper) == [L + t] * k + [n_keep_total + t] * (n_layers - k)
        stepper.expand(3)
        stepper.reorder(torch.tensor([2, 0, 1]))
        z = stepper.step(z.argmax(-1).repeat(3))
        assert z.shape[0] == 3
        assert cache_lengths(stepper) == [L + 4] * k + [n_keep_total + 4] * (n_layers - k)


def test_decode_positions_continue_original_numbering(tiny_adapter, inputs):
    """Layer K sees the kept tokens at their original positions, and the first decode token at L."""
    seen = []

    def spy(module, args, kwargs):
        seen.append(kwargs["position_ids"].clone())

    stepper = FastV().stepper(tiny_adapter, inputs, SampleSeeds(0, "x"))
    with torch.inference_mode(), attention.control(tiny_adapter, stepper.controller):
        handle = tiny_adapter.register_layer_pre_hook(2, spy)  # after the pruning hook: what layer K runs with
        try:
            z = stepper.prefill()
            z = stepper.step(z.argmax(-1))
            stepper.step(z.argmax(-1))
        finally:
            handle.remove()
    L = inputs.length
    assert seen[0].flatten().tolist() == stepper.pruning.keep.tolist() != list(range(L))
    assert [p.flatten().tolist() for p in seen[1:]] == [[L], [L + 1]]


def test_pruned_prefill_positions_keep_gaps(tiny_adapter, inputs):
    stepper = FastV().stepper(tiny_adapter, inputs, SampleSeeds(0, "x"))
    with torch.inference_mode(), attention.control(tiny_adapter, stepper.controller):
        seen = []
        h = tiny_adapter.register_layer_pre_hook(
            3, lambda m, a, kw: seen.append((a[0].shape[1], kw["position_ids"].clone()))
        )
        try:
            stepper.prefill()
        finally:
            h.remove()
    n, pos = seen[0]
    assert n == stepper.pruning.keep.numel()
    assert pos.flatten().tolist() == stepper.pruning.keep.tolist()


def test_ranking_equals_eager_output_attentions(tiny_adapter_eager, tiny_adapter_explicit, inputs):
    """Keep = top-n_keep image positions of the head-averaged last row of eager attentions at K−1."""
    for k in (1, 2):
        stepper = FastV(k=k).stepper(tiny_adapter_explicit, inputs, SampleSeeds(0, "x"))
        with torch.inference_mode(), attention.control(tiny_adapter_explicit, stepper.controller):
            stepper.prefill()
        with torch.inference_mode():
            out = tiny_adapter_eager.model(
                input_ids=inputs.input_ids, pixel_values=inputs.pixel_values, output_attentions=True, logits_to_keep=1
            )
        row = out.attentions[k - 1][0, :, -1, :]  # (H, L)
        s, n = inputs.image_start, inputs.n_image_tokens
        vals = row.float().mean(0)[s : s + n].sort(descending=True).values
        assert vals[127] - vals[128] > 1e-4 * vals[127]  # a clear boundary: the set comparison is meaningful
        # The reference ranking by hand (not the implementation's helper): positions of the 128
        # largest head-averaged values in the image span, ties to the lower position, ascending.
        mean = row.float().mean(0).tolist()
        ref = torch.tensor(sorted(sorted(range(s, s + n), key=lambda j: (-mean[j], j))[:128]))
        p = stepper.pruning
        assert torch.equal(p.kept_image, ref)
        L = inputs.length
        assert p.keep.numel() == L - n + 128 and int(p.keep[-1]) == L - 1
        text = [i for i in range(L) if not s <= i < s + n]
        assert set(text) <= set(p.keep.tolist())


def test_rank_ties_go_to_lower_position():
    probs = torch.tensor([[0.0, 0.2, 0.1, 0.2, 0.1, 0.2, 0.0]])
    assert rank_image_tokens(probs, 1, 5, 3).tolist() == [1, 3, 5]
    assert rank_image_tokens(probs, 1, 5, 4).tolist() == [1, 2, 3, 5]


# ---- beams, GQA, 336 px -------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["physical", "mask"])
def test_beam_reorder_replay(tiny_adapter, inputs, mode):
    run = run_method(FastV(mode=mode), tiny_adapter, inputs, BEAM)
    keep = run.stepper.pruning.keep
    assert run.result.hypotheses and run.result.hypotheses[0] == run.tokens
    for hyp in run.result.hypotheses:
        z, stepper = replay(FastV(mode=mode), tiny_adapter, inputs, hyp)
        torch.testing.assert_close(z, run.recorder.by_prefix[tuple(hyp[:-1])], **TOL)
        assert torch.equal(stepper.pruning.keep, keep)
        if mode == "physical":
            n = len(hyp) - 1
            assert cache_lengths(stepper)[2:] == [keep.numel() + n] * (tiny_adapter.n_layers - 2)


def test_generate_records_the_pruning(tiny_adapter, inputs):
    g = FastV().generate(tiny_adapter, inputs, GREEDY, SampleSeeds(0, "s0"))
    assert g.token_ids == run_method(FastV(), tiny_adapter, inputs, GREEDY).tokens
    assert g.extras == {"n_image": 256, "n_keep_image": 128, "first_pruned_layer": 2}
    assert tiny_adapter.attention_state.controller is None
    assert all(len(layer._forward_pre_hooks) == 0 for layer in tiny_adapter.layers)


def test_gqa_physical_equals_mask(test_image, caption_prompt):
    adapter = LlavaAdapter.load(tiny_checkpoint(text_kv_heads=2))
    inputs = adapter.prepare(test_image, caption_prompt)
    phys = run_method(FastV(), adapter, inputs, GREEDY)
    assert_equivalent(phys, run_method(FastV(mode="mask"), adapter, inputs, GREEDY))


def test_shapes_at_336(tiny_adapter_336, test_image, caption_prompt):
    inputs = tiny_adapter_336.prepare(test_image, caption_prompt)
    assert inputs.n_image_tokens == 576
    gen = GenConfig(max_new_tokens=4)
    phys = run_method(FastV(), tiny_adapter_336, inputs, gen)
    assert phys.stepper.pruning.kept_image.numel() == 288
    L = inputs.length
    assert cache_lengths(phys.stepper)[1:3] == [L + 3, L - 288 + 3]
    assert_equivalent(phys, run_method(FastV(mode="mask"), tiny_adapter_336, inputs, gen))


@pytest.mark.parametrize("backend", ["sdpa", "explicit"])
def test_chunk_after_pruned_prefill(tiny_adapter, tiny_adapter_explicit, inputs, backend):
    """A multi-token chunk after a pruned prefill gets a boolean mask wider than the pruned layers'
    keys; keeping its last kv_len columns must equal feeding the tokens one by one."""
    adapter = tiny_adapter if backend == "sdpa" else tiny_adapter_explicit
    toks = [5, 6, 7]
    outs = []
    for chunked in (True, False):
        stepper = FastV().stepper(adapter, inputs, SampleSeeds(0, "x"))
        with torch.inference_mode(), attention.control(adapter, stepper.controller):
            stepper.prefill()
            cache = stepper.inner.cache
            if chunked:
                out = adapter.model(input_ids=torch.tensor([toks]), **cache_kwargs(adapter.model, cache), use_cache=True)
                outs.append(out.logits[0])
            else:
                outs.append(torch.cat([stepper.step(torch.tensor([t])) for t in toks]))
        assert cache_lengths(stepper)[2] == stepper.pruning.keep.numel() + 3
    torch.testing.assert_close(outs[0].float(), outs[1], **TOL)
