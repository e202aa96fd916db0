"""Each VASparse component acts where its equation says it must (issue 18 item 4; methods.md §6).

The identity tests (test_vasparse.py) show that a switched-off component changes nothing; these show
the converse at settings where each one must act: VATS with every earlier key a candidate and a low
S, P with a large λ, SVCD with `stop_layer = 2`, SAP with a large β. Each moves the logits far beyond
the §1.9 tolerance, in the direction its equation implies, checked against plain formulas.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from methods.vasparse import VASparse
from methods.vasparse_attention import Layout, VASparseLayer, VASparseState, VATSParams
from methods.vasparse_svcd import SparseContrastBranch
from tests.stepping import gen_config, run_method
from vh_bench.decoding import attention
from vh_bench.decoding.attention import AttnCall
from vh_bench.decoding.pruning import round_half_up
from vh_bench.decoding.seeding import SampleSeeds

EFFECT = 1e-2  # 100 × the §1.9 tolerance
OFF = dict(lam=0.0, alpha=0.0, beta=0.0, sparsity=1.0, vats={"enabled": False}, svcd={"enabled": False},
           sap={"enabled": False})  # fmt: skip


def _logits(method: VASparse, adapter, inputs, n: int = 6, sample_id: str = "s0"):
    """Per step: (main-branch logits l_θ, contrast logits l_φ or None, combined scores z)."""
    rows: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def after(st):
        rows.append((st.last_logits.clone(), None if st.contrast is None else st.contrast.last_logits.clone()))

    run = run_method(method, adapter, inputs, gen_config(n=n), sample_id=sample_id, after=after)
    return [(lt, lp, z) for (lt, lp), z in zip(rows, run.z)], run


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def _teacher_forced(method: VASparse, adapter, inputs, tokens: list[int]) -> list[torch.Tensor]:
    """Main-branch logits of `method` fed `tokens` (so two settings are compared on one sequence)."""
    with torch.inference_mode():
        st = method.stepper(adapter, inputs, SampleSeeds(0, "s0"))
        out = []
        with attention.control(adapter, st.controller):
            st.prefill()
            out.append(st.last_logits.clone())
            for t in tokens[:-1]:
                st.step(torch.tensor([t]))
                out.append(st.last_logits.clone())
    return out


# ---- on the model: each component alone moves the main-branch logits ----------------------------
@pytest.mark.parametrize(
    "kw",
    [
        dict(sparsity=0.3, vats={"scope": "all", "merge": "none"}),  # VATS, dropped keys masked
        dict(sparsity=0.3, vats={"scope": "all"}),  # VATS with the DPC-kNN merge
        dict(beta=2.0, sap={"enabled": True}),  # SAP
    ],
    ids=["vats", "vats_merge", "sap"],
)
def test_vats_and_sap_each_change_the_main_logits(tiny_adapter, inputs, kw):
    off = _logits(VASparse(**OFF), tiny_adapter, inputs)[1]
    on = _teacher_forced(VASparse(**{**OFF, **kw}), tiny_adapter, inputs, off.tokens)
    ref = [z[0] for z in off.z]
    assert torch.allclose(on[0][0], ref[0], rtol=1e-4, atol=1e-4)  # prefill is untouched (§6)
    assert _max_diff([x[0] for x in on[1:]], ref[1:]) > EFFECT


def test_lambda_changes_the_selection_and_the_logits(tiny_adapter, inputs):
    """P (eq. (4)) with a large λ under sum-normalisation reorders δ, so other keys are dropped."""
    base = dict(OFF, sparsity=0.3, vats={"enabled": True, "scope": "all", "merge": "none"})
    off = run_method(VASparse(**base), tiny_adapter, inputs, gen_config(n=6))
    a = _teacher_forced(VASparse(**base), tiny_adapter, inputs, off.tokens)
    b = _teacher_forced(VASparse(**{**base, "lam": 5.0}), tiny_adapter, inputs, off.tokens)
    assert _max_diff(a[1:], b[1:]) > EFFECT


# ---- SVCD (eq. (6)) with stop_layer = 2 ------------------------------------------------------------
def test_svcd_contrast_is_the_equations_and_depends_on_the_image_mask(tiny_adapter, inputs):
    alpha = 0.5
    method = VASparse(**{**OFF, "alpha": alpha, "svcd": {"enabled": True, "stop_layer": 2, "plausibility": 0.0}})
    steps, run = _logits(method, tiny_adapter, inputs, sample_id="a")
    mask = run.stepper.image_mask
    n_img, start = inputs.n_image_tokens, inputs.image_start
    assert mask.numel() == round_half_up(0.5 * n_img) and mask.unique().numel() == mask.numel()
    assert start <= int(mask.min()) and int(mask.max()) < start + n_img  # image tokens only
    for lt, lp, z in steps:  # z = (1+α)·l_θ − α·l_φ, no cutoff: z − l_θ = α·(l_θ − l_φ)
        torch.testing.assert_close(z, (1 + alpha) * lt - alpha * lp, rtol=1e-5, atol=1e-5)
    assert _max_diff([z for _, _, z in steps], [lt for lt, _, _ in steps]) > EFFECT
    # Another sample's mask, same tokens: the contrast stream's logits change (stop_layer > 0 sees
    # the image through its first layers), unlike stop_layer = 0 (test_vasparse.py).
    other = SparseContrastBranch(tiny_adapter, inputs, _other_mask(mask, start, n_img), stop_layer=2, final_norm=True)
    same = SparseContrastBranch(tiny_adapter, inputs, mask, stop_layer=2, final_norm=True)
    with torch.inference_mode():
        embeds = tiny_adapter.build_inputs_embeds(inputs)
        l_same, l_other = [same.prefill(embeds)], [other.prefill(embeds)]
        for t in run.tokens[:-1]:
            l_same.append(same.step(torch.tensor([t])))
            l_other.append(other.step(torch.tensor([t])))
    for a, (_, lp, _) in zip(l_same, steps):
        torch.testing.assert_close(a, lp, rtol=1e-4, atol=1e-4)
    assert _max_diff(l_same, l_other) > EFFECT
    # ... and the image itself matters: the unmasked branch differs from the masked one.
    full = SparseContrastBranch(tiny_adapter, inputs, mask[:0], stop_layer=2, final_norm=True)
    with torch.inference_mode():
        assert float((full.prefill(embeds) - l_same[0]).abs().max()) > EFFECT


def _other_mask(mask: torch.Tensor, start: int, n_img: int) -> torch.Tensor:
    """The complementary half of the image tokens (disjoint from `mask`, same size)."""
    rest = torch.tensor(sorted(set(range(start, start + n_img)) - set(mask.tolist())))
    return rest[: mask.numel()]


# ---- SAP (eq. (7)) on a hand-built head: the sink's share falls ----------------------------------
def test_sap_lowers_the_sinks_share_when_the_other_scores_are_positive():
    torch.manual_seed(0)
    n_keys, d = 8, 4
    module = SimpleNamespace(num_key_value_groups=1, training=False)
    q = torch.ones(1, 1, 1, d)
    k = torch.rand(1, 1, n_keys, d) + 0.5  # every score s_j = scale·⟨q, k_j⟩ > 0
    v = torch.randn(1, 1, n_keys, d)
    scale = 1 / math.sqrt(d)
    c_prev = torch.tensor([[[40.0, 1, 2, 1, 0.5, 1, 2]]])  # key 0 has received by far the most: the sink
    shares = {}
    for beta in (0.0, 0.5, 2.0):
        state = VASparseState(Layout(prompt_len=4, image_start=1, n_image=2))
        state.c[0] = c_prev.clone()
        handler = VASparseLayer(state, vats=None, sap_beta=beta, saliency=False)
        call = AttnCall(module, 0, "decode", q, k, v, scale)
        _, probs = attention._explicit(module, q, k, v, None, scale, 0.0, handler, call)
        # plain formula: w = softmax(c with the current key's 0), s' = s·(1 + β − β·w), p = softmax(s')
        s = (q @ k.transpose(-1, -2))[0, 0, 0] * scale
        c = torch.cat([c_prev[0, 0], torch.zeros(1)])
        w = torch.exp(c - c.max()) / torch.exp(c - c.max()).sum()
        p = torch.softmax(s * (1 + beta - beta * w), dim=-1)
        torch.testing.assert_close(probs[0, 0, 0].float(), p, rtol=1e-5, atol=1e-6)
        shares[beta] = float(p[0])
    assert shares[2.0] < shares[0.5] < shares[0.0]  # the sink's share falls as β grows
    assert shares[0.0] - shares[2.0] > EFFECT


# ---- VATS (eq. (4)–(5)) on a hand-built head: kept keys take the dropped keys' mass ---------------
def test_vats_without_merge_renormalises_over_the_kept_keys():
    g = torch.Generator().manual_seed(3)
    n_keys, d = 12, 4
    module = SimpleNamespace(num_key_value_groups=1, training=False)
    q, k, v = (torch.randn(1, 1, 1, d, generator=g), torch.randn(1, 1, n_keys, d, generator=g),
               torch.randn(1, 1, n_keys, d, generator=g))  # fmt: skip
    scale = 1 / math.sqrt(d)
    state = VASparseState(Layout(prompt_len=4, image_start=1, n_image=2))
    params = VATSParams(lam=0.0, sparsity=0.5, scope="all", normalize="sum", merge="none", cluster_ratio=0.5, knn_k=5)
    handler = VASparseLayer(state, vats=params, sap_beta=None, saliency=False)
    call = AttnCall(module, 0, "decode", q, k, v, scale)
    out, probs = attention._explicit(module, q, k, v, None, scale, 0.0, handler, call)
    s = (q @ k.transpose(-1, -2))[0, 0, 0] * scale
    n = n_keys - 1  # candidates: every earlier key; keep ceil(0.5·11) = 6 by s², the current key always
    kept = sorted(sorted(range(n), key=lambda j: (-float(s[j]) ** 2, j))[: math.ceil(0.5 * n)]) + [n]
    p_full = torch.softmax(s, dim=-1)
    want = torch.zeros(n_keys)
    want[kept] = p_full[kept] / p_full[kept].sum()  # the kept keys share the dropped keys' mass
    torch.testing.assert_close(probs[0, 0, 0, :n_keys].float(), want, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out[0, 0, 0], want @ v[0, 0], rtol=1e-5, atol=1e-6)
