"""The attention-control layer (methods.md §1.6, §8.1): registration, mask trap, no-op identity, API."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AttentionInterface, LlavaForConditionalGeneration
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.models.llama.modeling_llama import eager_attention_forward

from tests.conftest import tiny_checkpoint
from tests.stepping import TOL
from vh_bench.decoding import attention
from vh_bench.decoding.attention import (
    AttentionController,
    AttentionHandler,
    ControlledStepper,
    HandlerChain,
    RowTensors,
)
from vh_bench.decoding.branch import Branch
from vh_bench.decoding.method import Method
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.models.cache_kwarg import cache_kwargs
from vh_bench.models.llava import LlavaAdapter
from vh_bench.records import GenConfig

N_STEPS = 16


@pytest.fixture(scope="module")
def inputs(tiny_adapter, test_image, caption_prompt):
    return tiny_adapter.prepare(test_image, caption_prompt)


def greedy_logits(adapter, inputs, n_steps=N_STEPS, controller=None, tokens=None) -> torch.Tensor:
    """(1 + n_steps, V) fp32 scores of a cached greedy run (or teacher-forced `tokens`)."""
    with torch.inference_mode(), attention.control(adapter, controller):
        if controller is not None:
            controller.mode = "prefill"
        cache = adapter.new_cache()
        out = adapter.forward(cache=cache, input_ids=inputs.input_ids, pixel_values=inputs.pixel_values)
        zs = [adapter.last_logits(out)]
        if controller is not None:
            controller.mode = "decode"
        for i in range(n_steps):
            tok = zs[-1].argmax(-1) if tokens is None else torch.tensor([tokens[i]])
            zs.append(adapter.last_logits(adapter.forward(cache=cache, input_ids=tok.view(1, 1))))
    return torch.cat(zs)


@pytest.fixture(scope="module")
def eager_ref(tiny_adapter_eager, inputs) -> torch.Tensor:
    """Stock eager attention: prefill + 16 greedy steps (the reference of the no-op tests)."""
    return greedy_logits(tiny_adapter_eager, inputs)


# ---- registration and the mask trap -----------------------------------------------------------
def test_registered_in_both_registries():
    assert attention.is_registered()
    assert AttentionInterface._global_mapping["vh_attn"] is attention.vh_attn
    assert AttentionMaskInterface._global_mapping["vh_attn"] is sdpa_mask


def test_function_receives_none_or_bool_mask(tiny_adapter, inputs, monkeypatch):
    """Prefill: None with q_len == kv_len. A multi-token chunk after a cache: a boolean mask."""
    seen = []
    real = attention.sdpa_attention_forward

    def spy(module, query, key, value, mask, **kw):
        seen.append((query.shape[2], key.shape[2], None if mask is None else (mask.dtype, tuple(mask.shape))))
        return real(module, query, key, value, mask, **kw)

    monkeypatch.setattr(attention, "sdpa_attention_forward", spy)
    L = inputs.length
    with torch.inference_mode():
        cache = tiny_adapter.new_cache()
        tiny_adapter.forward(cache=cache, input_ids=inputs.input_ids, pixel_values=inputs.pixel_values)
        prefill = list(seen)
        seen.clear()
        tiny_adapter.forward(cache=cache, input_ids=torch.tensor([[5, 6, 7]]))
    assert len(prefill) == tiny_adapter.n_layers
    assert all(q == kv == L and m is None for q, kv, m in prefill)
    assert all(m == (torch.bool, (1, 1, 3, L + 3)) for _, _, m in seen)


def _chunk_vs_steps(adapter, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of 3 teacher-forced tokens fed as one chunk after the prefill, and one at a time."""
    toks = [5, 6, 7]
    with torch.inference_mode():
        c1, c2 = adapter.new_cache(), adapter.new_cache()
        for c in (c1, c2):
            adapter.forward(cache=c, input_ids=inputs.input_ids, pixel_values=inputs.pixel_values)
        chunk = adapter.model(input_ids=torch.tensor([toks]), **cache_kwargs(adapter.model, c1), use_cache=True).logits[0]
        steps = torch.cat(
            [adapter.model(input_ids=torch.tensor([[t]]), **cache_kwargs(adapter.model, c2), use_cache=True).logits[0] for t in toks]
        )
    return chunk, steps


def test_mask_registration_keeps_chunked_attention_causal(tiny_adapter, inputs):
    """Fails if `vh_attn` is missing from AttentionMaskInterface: the sdpa path then gets None for a
    3-token chunk, takes it as top-left causal and attends to the wrong keys."""
    chunk, steps = _chunk_vs_steps(tiny_adapter, inputs)
    torch.testing.assert_close(chunk, steps, **TOL)
    # Control: the same check without the mask registration fails.
    del AttentionMaskInterface._global_mapping["vh_attn"]
    try:
        bad_chunk, bad_steps = _chunk_vs_steps(tiny_adapter, inputs)
    finally:
        attention.register()
    assert not torch.allclose(bad_chunk, bad_steps, **TOL)


def test_trap_control_attention_registry_only(tiny_adapter_eager, tiny_adapter_explicit, inputs):
    """Eager attention registered only in AttentionInterface loses the causal mask at prefill;
    vh_attn's explicit path treats None as causal and stays exactly eager."""
    AttentionInterface.register("vh_trap_eager", eager_attention_forward)
    try:
        trap = LlavaForConditionalGeneration.from_pretrained(
            tiny_checkpoint(), attn_implementation={"text_config": "vh_trap_eager", "vision_config": "sdpa"}
        ).eval()
        with torch.inference_mode():
            z_trap = trap(input_ids=inputs.input_ids, pixel_values=inputs.pixel_values, logits_to_keep=1).logits
    finally:
        del AttentionInterface._global_mapping["vh_trap_eager"]
    z_eager = greedy_logits(tiny_adapter_eager, inputs, n_steps=0)
    z_explicit = greedy_logits(tiny_adapter_explicit, inputs, n_steps=0)
    assert not torch.allclose(z_trap[:, -1].float(), z_eager, **TOL)
    assert torch.equal(z_explicit, z_eager)


# ---- no-op identity ---------------------------------------------------------------------------
class NoOp(AttentionHandler):
    """Explicit path on every call, nothing modified; counts calls to prove it ran."""

    modes = frozenset({"prefill", "decode"})

    def __init__(self) -> None:
        self.calls = 0

    def probs(self, call, p):
        self.calls += 1


def test_noop_explicit_is_bit_identical_to_eager(tiny_adapter_explicit, inputs, eager_ref):
    """Backend eager, no controller / an idle controller: prefill + 16 steps bit-identical."""
    assert torch.equal(greedy_logits(tiny_adapter_explicit, inputs), eager_ref)
    empty = AttentionController(tiny_adapter_explicit.n_layers)
    assert torch.equal(greedy_logits(tiny_adapter_explicit, inputs, controller=empty), eager_ref)


def test_noop_handler_is_bit_identical_to_eager(tiny_adapter, inputs, eager_ref):
    """A handler on every layer forcing the explicit path, modifying nothing (on the sdpa model)."""
    ctrl = AttentionController(tiny_adapter.n_layers)
    noop = ctrl.add_handler(range(tiny_adapter.n_layers), NoOp())
    assert torch.equal(greedy_logits(tiny_adapter, inputs, controller=ctrl), eager_ref)
    assert noop.calls == tiny_adapter.n_layers * (1 + N_STEPS)


def test_plain_path_is_bit_identical_to_sdpa(tiny_adapter, tiny_adapter_sdpa_stock, inputs):
    ref = greedy_logits(tiny_adapter_sdpa_stock, inputs)
    assert torch.equal(greedy_logits(tiny_adapter, inputs), ref)
    # Installed but idle (no handlers): still the plain path.
    assert torch.equal(greedy_logits(tiny_adapter, inputs, controller=AttentionController(tiny_adapter.n_layers)), ref)


def test_explicit_close_to_plain(tiny_adapter, inputs, eager_ref):
    plain = greedy_logits(tiny_adapter, inputs, tokens=eager_ref.argmax(-1).tolist())
    torch.testing.assert_close(plain, eager_ref, **TOL)
    assert not torch.equal(plain, eager_ref)  # genuinely different kernels


def test_noop_identity_gqa(test_image, caption_prompt):
    path = tiny_checkpoint(text_kv_heads=2)
    stock = LlavaAdapter.load(path, attn_implementation="eager", stock_attention=True)
    ours = LlavaAdapter.load(path, attn_implementation="eager")
    assert ours.model.config.text_config.num_key_value_heads == 2
    inputs = ours.prepare(test_image, caption_prompt)
    ctrl = AttentionController(ours.n_layers)
    ctrl.add_handler(range(ours.n_layers), NoOp())
    ref = greedy_logits(stock, inputs, n_steps=4)
    assert torch.equal(greedy_logits(ours, inputs, n_steps=4, controller=ctrl), ref)


# ---- selection --------------------------------------------------------------------------------
def test_vision_tower_keeps_its_own_attention(tiny_adapter, inputs):
    cfg = tiny_adapter.model.config
    assert cfg.text_config._attn_implementation == "vh_attn"
    assert cfg.vision_config._attn_implementation == "sdpa"
    assert tiny_adapter.attn_backend == "sdpa" and tiny_adapter.attn_setting == "text=vh_attn(sdpa),vision=sdpa"
    vision_attn = [m for m in tiny_adapter.vision_tower.modules() if hasattr(m, "q_proj")]
    assert vision_attn and all(attention.state_of(m) is None for m in vision_attn)
    assert all(attention.state_of(m) is tiny_adapter.attention_state for m in tiny_adapter.attention_modules())
    with torch.inference_mode():
        feats = tiny_adapter.image_features(inputs.pixel_values)
    assert feats.shape == (inputs.n_image_tokens, tiny_adapter.model.config.text_config.hidden_size)


def test_attn_backend_is_validated():
    from vh_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="runtime.attn_backend"):
        LlavaAdapter.load(tiny_checkpoint(), attn_implementation="flash_attention_2")


# ---- handler API ------------------------------------------------------------------------------
class SplitKey(AttentionHandler):
    """Splits key 0 into two halves of its probability mass: its real score − log 2, plus a virtual
    copy with the same score and value. Mathematically the identity; exercises add_keys/probs."""

    modes = frozenset({"decode"})

    def __init__(self) -> None:
        self.row_sums: list[torch.Tensor] = []

    def scores(self, call, s):
        s0 = s[..., :1] - math.log(2.0)
        s[..., :1] = s0
        call.add_keys(s0.clone(), call.value[:, :, :1, :])
        return s

    def probs(self, call, p):
        assert p.shape[-1] == call.kv_len + 1
        self.row_sums.append(p.sum(-1))
        torch.testing.assert_close(p[..., 0], p[..., -1])


class FillKeys(AttentionHandler):
    def __init__(self, keys):
        self.keys = torch.tensor(keys)

    def scores(self, call, s):
        return s.index_fill_(-1, self.keys, torch.finfo(s.dtype).min)


def test_virtual_keys_and_probs(tiny_adapter_explicit, inputs):
    plain = greedy_logits(tiny_adapter_explicit, inputs, n_steps=4)
    ctrl = AttentionController(tiny_adapter_explicit.n_layers)
    split = ctrl.add_handler([0, -1], SplitKey())
    z = greedy_logits(tiny_adapter_explicit, inputs, n_steps=4, controller=ctrl, tokens=plain.argmax(-1).tolist())
    torch.testing.assert_close(z, plain, **TOL)
    assert len(split.row_sums) == 2 * 4  # two layers, decode only
    torch.testing.assert_close(torch.cat([r.flatten() for r in split.row_sums]), torch.ones(8 * 4), rtol=0, atol=1e-5)


def test_score_edits_act_and_chain(tiny_adapter_explicit, inputs):
    base = greedy_logits(tiny_adapter_explicit, inputs, n_steps=2)
    ctrl = AttentionController(tiny_adapter_explicit.n_layers)
    ctrl.add_handler(1, FillKeys([3, 4, 5]))
    ctrl.add_handler(1, FillKeys([6]))
    assert isinstance(ctrl.handler(1), HandlerChain)
    chained = greedy_logits(tiny_adapter_explicit, inputs, n_steps=2, controller=ctrl, tokens=base.argmax(-1).tolist())
    single = AttentionController(tiny_adapter_explicit.n_layers)
    single.add_handler(1, FillKeys([3, 4, 5, 6]))
    one = greedy_logits(tiny_adapter_explicit, inputs, n_steps=2, controller=single, tokens=base.argmax(-1).tolist())
    assert torch.equal(chained, one)
    assert not torch.allclose(chained, base, **TOL)


def test_modes_select_handlers():
    ctrl = AttentionController(4)
    h = ctrl.add_handler(-1, NoOp())
    ctrl.mode = "prefill"
    assert ctrl.active == {3: h}
    ctrl.mode = "branch"
    assert ctrl.active == {}
    with pytest.raises(ValueError):
        ctrl.mode = "train"
    with pytest.raises(IndexError):
        ctrl.add_handler(4, NoOp())


class Rows(AttentionHandler):
    def __init__(self):
        self.state = RowTensors(c=torch.arange(2).float()[:, None])

    def expand(self, n):
        self.state.expand(n)

    def reorder(self, beam_idx):
        self.state.reorder(beam_idx)


def test_row_state_follows_beams():
    ctrl = AttentionController(2)
    h = ctrl.add_handler([0, 1], Rows())  # one handler on two layers: expanded once
    extra = ctrl.add_row_state(RowTensors(r=torch.tensor([[7.0], [8.0]])))
    ctrl.expand(3)
    assert h.state["c"].flatten().tolist() == [0, 0, 0, 1, 1, 1]
    assert extra["r"].flatten().tolist() == [7, 7, 7, 8, 8, 8]
    ctrl.reorder(torch.tensor([5, 0, 3]))
    assert h.state["c"].flatten().tolist() == [1, 0, 1]
    assert extra["r"].flatten().tolist() == [8, 7, 8]


# ---- always restored --------------------------------------------------------------------------
class Boom(AttentionHandler):
    modes = frozenset({"decode"})

    def observe(self, call):
        raise RuntimeError("boom")


class Exploding(Method):
    name = "exploding"

    def stepper(self, adapter, inputs, seeds):
        ctrl = AttentionController(adapter.n_layers)
        prune = ctrl.prune_sequence(2)
        prune.keep = torch.arange(inputs.length)
        ctrl.add_handler(1, Boom())
        return ControlledStepper(Branch(adapter, inputs), ctrl)


def test_model_restored_after_exception(tiny_adapter, inputs):
    before = greedy_logits(tiny_adapter, inputs, n_steps=2)
    hooks_before = [len(layer._forward_pre_hooks) for layer in tiny_adapter.layers]
    outer = AttentionController(tiny_adapter.n_layers)
    with attention.control(tiny_adapter, outer):
        with pytest.raises(RuntimeError, match="boom"):
            Exploding().generate(tiny_adapter, inputs, GenConfig(max_new_tokens=4), SampleSeeds(0, "x"))
        assert tiny_adapter.attention_state.controller is outer  # the previous controller is back
    assert tiny_adapter.attention_state.controller is None
    assert [len(layer._forward_pre_hooks) for layer in tiny_adapter.layers] == hooks_before
    assert torch.equal(greedy_logits(tiny_adapter, inputs, n_steps=2), before)


def test_control_refuses_stock_model(tiny_adapter_eager):
    with pytest.raises(RuntimeError, match="vh_attn"):
        with attention.control(tiny_adapter_eager, AttentionController(tiny_adapter_eager.n_layers)):
            pass
    with attention.control(tiny_adapter_eager, None):
        pass
