"""The Triton kernel of VASparse's decode attention against the reference path (methods.md §6.5).

Run on the CPU under `TRITON_INTERPRET=1` (set by tests/conftest.py before triton is imported),
the same kernel source that compiles for CUDA: call by call on the hand-made heads of
test_vasparse_fused.py (output, dropped set, â, SAP accumulators, sink weight, saliency), in
float16/bfloat16 against the float32 reference on the same (rounded) inputs, and token by token on
the tiny model. The interpreter is slow (~1 s per (row, head) program on this machine), so the
generations run VASparse on one layer and the largest hand case is kept small.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import pytest
import torch

from methods import vasparse_fused, vasparse_triton
from methods.vasparse import VASparse
from methods.vasparse_attention import VASparseLayer, VASparseState
from tests.methods.test_vasparse_fused import CASES, LAYOUT, heads, params
from tests.stepping import assert_scores_close, gen_config, margins_ok, run_method
from vh_bench.decoding import attention
from vh_bench.decoding.attention import AttnCall
from vh_bench.errors import ConfigError

pytestmark = pytest.mark.skipif(
    torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") != "1", reason="interpreter tests (CPU only)"
)

# The fused-kernel cases, the 200-key one smaller (the interpreter runs one program per head).
TRITON_CASES = {**CASES, "long": (80, params(scope="all", sparsity=0.7, knn_k=5), 0.1, True, {"d": 32, "heads": 2, "kv_heads": 2})}


@pytest.fixture(scope="module")
def kernel():
    return vasparse_triton.load()


def run_layer(n_keys, vats, beta, saliency, kern, dtype=torch.float32, **head_kw):
    """One layer call on `heads(...)` cast to `dtype`; the reference path (kern None) or the kernel."""
    q, k, v, r, c = (t.to(dtype) if i < 3 else t for i, t in enumerate(heads(n_keys, **head_kw)))
    module = SimpleNamespace(num_key_value_groups=q.shape[1] // k.shape[1], training=False)
    state = VASparseState(LAYOUT, trace=True, record=True)
    state.r, state.c[0] = r.clone(), c.clone()
    handler = VASparseLayer(state, vats=vats, sap_beta=beta, saliency=saliency, kernel=kern)
    call = AttnCall(module, 0, "decode", q, k, v, 1 / math.sqrt(q.shape[-1]))
    assert handler.explicit(call)
    out = handler.attend(call, None)
    if kern is None:
        assert out is None
        out = attention._explicit(module, q, k, v, None, call.scaling, 0.0, handler, call)[0]
    return state, out


def assert_same_state(got, ref, vats, beta, *, rtol=1e-5, atol=1e-6):
    if vats is not None:
        assert torch.equal(got.dropped[0], ref.dropped[0])  # the same keys, in the same order
    torch.testing.assert_close(got.rows[0], ref.rows[0], rtol=rtol, atol=atol / 10)  # â
    if beta is not None:
        assert got.c[0].shape == ref.c[0].shape  # grown by one entry, as the reference grows it
        torch.testing.assert_close(got.c[0], ref.c[0], rtol=rtol, atol=atol)
        torch.testing.assert_close(got.sink_sum, ref.sink_sum, rtol=rtol, atol=0)
    torch.testing.assert_close(got.r, ref.r, rtol=rtol, atol=atol / 10)


@pytest.mark.parametrize("case", list(TRITON_CASES))
def test_kernel_call_equals_the_reference_path(kernel, case):
    n_keys, vats, beta, saliency, head_kw = TRITON_CASES[case]
    ref, out_ref = run_layer(n_keys, vats, beta, saliency, None, **head_kw)
    got, out_got = run_layer(n_keys, vats, beta, saliency, kernel, **head_kw)
    assert out_got.shape == out_ref.shape and out_got.dtype == out_ref.dtype
    torch.testing.assert_close(out_got, out_ref, rtol=1e-5, atol=1e-6)
    assert_same_state(got, ref, vats, beta)


def test_ties_are_decided_by_position(kernel):
    n_keys, vats, beta, saliency, head_kw = CASES["ties"]
    got, _ = run_layer(n_keys, vats, beta, saliency, kernel, **head_kw)
    for h in range(2):
        drop = set(got.dropped[0][0, h].tolist())
        tied = [p for p in range(6, 12) if p in drop]
        assert tied and tied == list(range(12 - len(tied), 12))  # a suffix of the tied block


def test_nothing_dropped_and_no_sap_is_plain_attention(kernel):
    # S = 1 with saliency recording only: softmax(s)·V, the same as sdpa (an independent formula).
    q, k, v, r, _ = heads(17, d=16)
    state = VASparseState(LAYOUT)
    state.r = r
    handler = VASparseLayer(state, vats=params(sparsity=1.0), sap_beta=None, saliency=True, kernel=kernel)
    call = AttnCall(SimpleNamespace(num_key_value_groups=1), 0, "decode", q, k, v, 0.25)
    out = handler.attend(call, None)
    expect = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.25).transpose(1, 2)
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-6)
    p = torch.softmax(q @ k.transpose(-1, -2) * 0.25, dim=-1)[:, :, 0]
    torch.testing.assert_close(state.r[:, -1], p[..., 1:4].sum(-1).mean(1))


# Half precision: the kernel reads fp16/bf16 Q/K/V and computes in fp32, so it must equal the fp32
# reference on the same rounded inputs up to the rounding of its fp16/bf16 output (one ulp of the
# output's magnitude: 2^-10 resp. 2^-7 relative), with identical selections and fp32-close state.
HALF_TOL = {torch.float16: dict(rtol=1e-3, atol=1e-3), torch.bfloat16: dict(rtol=8e-3, atol=8e-3)}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", ["dpc_knn", "gqa", "no_merge"])
def test_half_precision_is_the_fp32_reference_on_rounded_inputs(kernel, dtype, case):
    n_keys, vats, beta, saliency, head_kw = CASES[case]
    got, out_got = run_layer(n_keys, vats, beta, saliency, kernel, dtype=dtype, **head_kw)
    assert out_got.dtype == dtype
    ref, out_ref = run_layer_rounded(n_keys, vats, beta, saliency, dtype, **head_kw)
    torch.testing.assert_close(out_got.float(), out_ref, **HALF_TOL[dtype])
    assert_same_state(got, ref, vats, beta, rtol=1e-5, atol=1e-6)


def run_layer_rounded(n_keys, vats, beta, saliency, dtype, **head_kw):
    """The fp32 reference on Q/K/V rounded to `dtype` and back."""
    q, k, v, r, c = heads(n_keys, **head_kw)
    q, k, v = (t.to(dtype).float() for t in (q, k, v))
    module = SimpleNamespace(num_key_value_groups=q.shape[1] // k.shape[1], training=False)
    state = VASparseState(LAYOUT, trace=True, record=True)
    state.r, state.c[0] = r.clone(), c.clone()
    handler = VASparseLayer(state, vats=vats, sap_beta=beta, saliency=saliency, kernel=None)
    call = AttnCall(module, 0, "decode", q, k, v, 1 / math.sqrt(q.shape[-1]))
    assert handler.explicit(call)
    out = attention._explicit(module, q, k, v, None, call.scaling, 0.0, handler, call)[0]
    return state, out


def test_half_precision_is_close_to_the_half_reference_path(kernel):
    # Against the torch path run in fp16 itself (scores rounded to fp16 there): the same selection on
    # this case, outputs within fp16 tolerance.
    n_keys, vats, beta, saliency, head_kw = CASES["dpc_knn"]
    ref, out_ref = run_layer(n_keys, vats, beta, saliency, None, dtype=torch.float16, **head_kw)
    got, out_got = run_layer(n_keys, vats, beta, saliency, kernel, dtype=torch.float16, **head_kw)
    assert torch.equal(got.dropped[0], ref.dropped[0])
    torch.testing.assert_close(out_got, out_ref, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(got.rows[0], ref.rows[0], rtol=2e-3, atol=1e-4)


def test_the_kernel_leaves_prefill_text_scope_and_masks_to_the_reference(kernel):
    q, k, v, r, c = heads(17)
    module = SimpleNamespace(num_key_value_groups=1)
    state = VASparseState(LAYOUT)
    state.r, state.c[0] = r, c
    text = VASparseLayer(state, vats=params(scope="text", sparsity=0.5), sap_beta=0.1, saliency=False, kernel=kernel)
    assert text.attend(AttnCall(module, 0, "decode", q, k, v, 0.3), None) is None
    gen = VASparseLayer(state, vats=params(scope="all", sparsity=0.5), sap_beta=0.1, saliency=False, kernel=kernel)
    mask = torch.zeros(1, 1, 1, 17, dtype=torch.bool)
    assert gen.attend(AttnCall(module, 0, "decode", q, k, v, 0.3), mask) is None
    assert gen.attend(AttnCall(module, 0, "prefill", q, k, v, 0.3), None) is None


# ---- whole generations ----------------------------------------------------------------------------
# VASparse on one layer, the default `generated` scope (m ≤ 2: the interpreter's cost grows with m²;
# the merge of many keys is covered call by call above), SVCD and SAP on.
ONE_LAYER = {"vats": {"layers": [1], "saliency_layer": 1}, "sap": {"layers": [1]}, "sparsity": 0.5}


@pytest.mark.parametrize("strategy, n", [("greedy", 6), ("beam", 4)])
def test_generations_match_the_reference_path(tiny_adapter, inputs, strategy, n):
    gen = gen_config(strategy, n=n)
    ref = run_method(VASparse(**ONE_LAYER, kernel="torch"), tiny_adapter, inputs, gen)
    method = VASparse(**ONE_LAYER, kernel="triton")
    got = run_method(method, tiny_adapter, inputs, gen)
    assert method.implementation() == {"vasparse_kernel": "triton"}  # what results.json records
    assert margins_ok(ref.z)  # so the token check below is not vacuous
    assert got.tokens == ref.tokens
    assert_scores_close(got.z, ref.z)
    st_ref, st_got = ref.stepper.state, got.stepper.state
    torch.testing.assert_close(st_got.r, st_ref.r, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(st_got.c[1], st_ref.c[1], rtol=1e-4, atol=1e-5)


# ---- choosing the kernel -----------------------------------------------------------------------
def test_resolution_rules(monkeypatch):
    assert vasparse_fused.resolve("triton", "cpu", torch.float16) == "triton"  # under the interpreter
    assert vasparse_fused.resolve("auto", "cuda:0", torch.float16) == "triton"
    with pytest.raises(ConfigError) as exc:
        vasparse_fused.resolve("triton", "cpu", torch.float64)
    assert exc.value.key == "method.kernel"
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError) as exc:
        vasparse_fused.resolve("triton", "cpu", torch.float32)
    assert "CUDA" in str(exc.value)
    assert vasparse_fused.resolve("auto", "cpu", torch.float32) == "cpu"  # the C++ kernel stays CPU's
