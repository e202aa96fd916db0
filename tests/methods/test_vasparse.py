"""VASparse invariants (methods.md §8.5, §8.1 beam reorder) on the tiny model, CPU fp32."""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import pytest
import torch

import methods.vasparse as vasparse_module
from methods.vanilla import Vanilla
from methods.vasparse import VASparse
from methods.vasparse_attention import Layout, VASparseLayer, VASparseState, VATSParams
from methods.vasparse_cluster import dpc_knn
from methods.vasparse_svcd import draw_image_mask
from tests.stepping import assert_scores_close, check_beam_replay, gen_config, margins_ok, run_method
from vh_bench.config import compose
from vh_bench.decoding.attention import AttnCall
from vh_bench.decoding.layer_prefix import forward_layers
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError
from vh_bench.runner import build_method

IDENTITY = dict(sparsity=1.0, lam=0.0, alpha=0.0, beta=0.0)
ACTIVE_VATS = {"scope": "all"}  # drops from the first decode step (with "generated", only once n ≥ 10)


@pytest.fixture(scope="module")
def inputs_x(tiny_adapter_explicit, test_image, caption_prompt):
    return tiny_adapter_explicit.prepare(test_image, caption_prompt)


def assert_same_generation(a, b) -> None:
    """'Equals' across numerically different paths: same tokens (if margins allow), scores close."""
    if margins_ok(b.z):
        assert a.tokens == b.tokens
    assert_scores_close(a.z, b.z)


# ---- identities --------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_identity_settings_equal_vanilla(tiny_adapter, inputs, strategy):
    svcd = {} if strategy == "greedy" else {"plausibility": 0.0}
    gen = gen_config(strategy, n=8)
    ref = run_method(Vanilla(), tiny_adapter, inputs, gen)
    got = run_method(VASparse(**IDENTITY, svcd=svcd), tiny_adapter, inputs, gen)
    assert got.tokens == ref.tokens
    if strategy == "greedy":  # the cutoff leaves −inf in z; compare the surviving entries
        for a, b in zip(got.z, ref.z):
            fin = torch.isfinite(a)
            assert torch.allclose(a[fin], b[fin], rtol=1e-4, atol=1e-4)
    else:
        assert_scores_close(got.z, ref.z)


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_identity_is_bit_identical_to_vanilla_on_the_eager_backend(tiny_adapter_explicit, inputs_x, strategy):
    # Bit identity is a property of the reference path (eager's op order); the fused CPU kernel
    # agrees to rounding (test_identity_settings_equal_vanilla, tests/methods/test_vasparse_fused.py).
    gen = gen_config(strategy, n=8)
    ref = run_method(Vanilla(), tiny_adapter_explicit, inputs_x, gen)
    got = run_method(VASparse(**IDENTITY, svcd={"plausibility": 0.0}, kernel="torch"), tiny_adapter_explicit, inputs_x, gen)
    assert got.tokens == ref.tokens
    assert all(torch.equal(a, b) for a, b in zip(got.z, ref.z))


@pytest.mark.parametrize(
    "identity, disabled, active",
    [
        ({"sparsity": 1.0}, {"vats": {"enabled": False}}, {"sparsity": 0.5}),
        ({"beta": 0.0}, {"sap": {"enabled": False}}, {"beta": 0.5}),
        ({"alpha": 0.0, "svcd": {"plausibility": 0.0}}, {"svcd": {"enabled": False}}, {"alpha": 0.5}),
    ],
)
def test_each_component_alone_is_exactly_its_identity(tiny_adapter_explicit, inputs_x, identity, disabled, active):
    """With the other components on: value-identity == switched off (bit-identical on the eager
    backend), and a non-identity value does change the scores (the test can fail)."""

    def build(**kw):
        base = {"vats": dict(ACTIVE_VATS), "svcd": {"plausibility": 0.0}}
        for k, v in kw.items():
            base[k] = {**base.get(k, {}), **v} if isinstance(v, dict) else v
        return VASparse(**base)

    gen = gen_config("greedy", n=6)
    a = run_method(build(**identity), tiny_adapter_explicit, inputs_x, gen)
    b = run_method(build(**disabled), tiny_adapter_explicit, inputs_x, gen)
    assert a.tokens == b.tokens
    assert all(torch.equal(x, y) for x, y in zip(a.z, b.z))
    c = run_method(build(**active), tiny_adapter_explicit, inputs_x, gen)
    assert not torch.allclose(c.z[-1], b.z[-1])


def test_merge_with_singleton_clusters_equals_keeping_every_key(tiny_adapter, inputs):
    # S = 0.2 so that the dropped keys matter on the tiny model (at 0.9 they carry ~1e-6 of the mass).
    gen = gen_config("greedy", n=6)
    logits = {}

    def run(name, **kw):
        logits[name] = []
        return run_method(VASparse(**kw), tiny_adapter, inputs, gen, after=lambda st: logits[name].append(st.last_logits))

    merged = run("merged", sparsity=0.2, vats={**ACTIVE_VATS, "cluster_ratio": 1.0})
    kept = run("kept", sparsity=1.0, vats=ACTIVE_VATS)
    assert_same_generation(merged, kept)
    # Control: dropping the same keys without merging moves the logits far beyond the tolerance.
    run("dropped", sparsity=0.2, vats={**ACTIVE_VATS, "merge": "none"})
    assert max(float((x - y).abs().max()) for x, y in zip(logits["dropped"], logits["kept"])) > 1e-2


# ---- VATS on a hand-built head -----------------------------------------------------------------
def make_call(q, k, v, layer=0, mode="decode"):
    module = SimpleNamespace(num_key_value_groups=1)
    return AttnCall(module, layer, mode, q, k, v, 1 / math.sqrt(q.shape[-1]))


def head(n_keys, heads=2, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, heads, 1, d, generator=g)
    k = torch.randn(1, heads, n_keys, d, generator=g)
    v = torch.randn(1, heads, n_keys, d, generator=g)
    r = torch.rand(1, n_keys, generator=g)
    return q, k, v, r


def vats_params(**kw):
    base = dict(lam=0.1, sparsity=0.9, scope="generated", normalize="sum", merge="none", cluster_ratio=0.5, knn_k=5)
    return VATSParams(**{**base, **kw})


LAYOUT = Layout(prompt_len=6, image_start=1, n_image=3)


def test_vats_keeps_the_top_nine_of_ten_and_never_touches_other_keys():
    n_keys = LAYOUT.prompt_len + 11  # candidates: generated positions 6 … 15 (n = 10); 16 is current
    q, k, v, r = head(n_keys)
    state = VASparseState(LAYOUT)
    state.r = r[:, : n_keys - 1]
    handler = VASparseLayer(state, vats=vats_params(), sap_beta=None, saliency=False)
    call = make_call(q, k, v)
    assert handler.explicit(call)
    s = call.raw_scores().float()
    out = handler.scores(call, s.clone())
    # by hand
    cand = torch.arange(6, 16)
    p = torch.softmax(r[0, : n_keys - 1], dim=0)[cand]
    for h in range(2):
        a = s[0, h, 0, cand] ** 2
        delta = a / a.sum() + 0.1 * p / p.sum()
        drop = int(cand[torch.argmin(delta)])
        changed = (out[0, h, 0] != s[0, h, 0]).nonzero().flatten().tolist()
        assert changed == [drop]
        assert out[0, h, 0, drop] == torch.finfo(torch.float32).min
    assert call.extra_scores is None  # merge = none: nothing replaces it
    # n = 9 drops nothing: the layer takes the plain path
    q9, k9, v9, _ = head(n_keys - 1)
    assert not handler.explicit(make_call(q9, k9, v9))


def test_vats_merge_builds_virtual_keys_and_redistributes_their_probability():
    n_keys = 17
    q, k, v, r = head(n_keys, seed=1)
    state = VASparseState(LAYOUT, trace=True)
    state.r = r[:, : n_keys - 1]
    handler = VASparseLayer(state, vats=vats_params(scope="all", sparsity=0.5, merge="dpc_knn"), sap_beta=None, saliency=False)
    call = make_call(q, k, v)
    s = call.raw_scores().float()
    out = handler.scores(call, s.clone())
    dropped = (out[0, :, 0] == torch.finfo(torch.float32).min).nonzero()
    assert dropped.shape[0] == 2 * 8  # n = 16 candidates, keep ceil(8) = 8, per head
    assert call.extra_scores.shape == (1, 2, 1, 4)  # c = round_half_up(0.5·8) = 4 clusters per head
    p_all = torch.softmax(r[0, :16], dim=0)
    for h in range(2):
        idx = dropped[dropped[:, 0] == h, 1]
        a = s[0, h, 0, :16] ** 2
        delta = (a / a.sum() + 0.1 * p_all / p_all.sum())[idx]
        assign, _ = dpc_knn(k[0, h, idx], 4, 5)
        for c in range(4):
            members = assign == c
            w = delta[members] / delta[members].sum()
            k_bar = (w[:, None] * k[0, h, idx[members]]).sum(0)
            v_bar = (w[:, None] * v[0, h, idx[members]]).sum(0)
            assert torch.allclose(call.extra_scores[0, h, 0, c], call.scaling * q[0, h, 0] @ k_bar, atol=1e-6)
            assert torch.allclose(call.extra_values[0, h, c], v_bar, atol=1e-6)
    probs = torch.softmax(torch.cat([out, call.extra_scores], dim=-1), dim=-1)
    handler.probs(call, probs)
    a_hat = state.rows[0]
    assert torch.allclose(a_hat.sum(-1), torch.ones(1, 2), atol=1e-6)
    assert (a_hat[0][out[0, :, 0] == torch.finfo(torch.float32).min] > 0).all()


def test_sap_rescales_decode_scores_by_a_hand_computation():
    n_keys = 9
    q, k, v, _ = head(n_keys, seed=2)
    state = VASparseState(LAYOUT)
    c_prev = torch.tensor([[5.0, 0.5, 0.2, 1.0, 0.1, 0.1, 0.3, 0.8]]).repeat(2, 1)[None]  # (1, H, N−1)
    state.c[0] = c_prev.clone()
    beta = 0.3
    handler = VASparseLayer(state, vats=None, sap_beta=beta, saliency=False)
    call = make_call(q, k, v)
    s = call.raw_scores().float()
    out = handler.scores(call, s.clone())
    c_full = torch.cat([c_prev, torch.zeros(1, 2, 1)], dim=-1)
    w = torch.exp(c_full) / torch.exp(c_full).sum(-1, keepdim=True)
    assert torch.allclose(out, s * (1 + beta - beta * w[:, :, None, :]))
    p = torch.softmax(out, dim=-1)
    handler.probs(call, p)
    assert torch.allclose(state.c[0], c_full + p[:, :, 0])


# ---- recorded rows, cache, saliency, SAP on the model ------------------------------------------
def test_recorded_rows_dropped_probability_zero_or_sum_to_one(tiny_adapter, inputs):
    for merge in ("none", "dpc_knn"):
        rows = []

        def after(st):
            st.state.trace = True
            rows.extend((layer, st.state.rows[layer], st.state.dropped[layer]) for layer in st.state.rows)
            st.state.rows.clear()

        run_method(VASparse(vats={**ACTIVE_VATS, "merge": merge}), tiny_adapter, inputs, gen_config(n=5), after=after)
        assert len(rows) == 4 * 4  # 4 layers × 4 decode steps
        for _, a_hat, dropped in rows:
            assert dropped is not None and dropped.shape[-1] > 0
            if merge == "none":
                assert (torch.gather(a_hat, -1, dropped) == 0).all()
            else:
                assert torch.allclose(a_hat.sum(-1), torch.ones_like(a_hat[..., 0]), atol=1e-5)


def test_the_real_cache_is_never_mutated(tiny_adapter, inputs):
    snaps = []

    def after(st):
        snaps.append([(lay.keys.clone(), lay.values.clone()) for lay in st.main.cache.layers])

    run_method(VASparse(vats=ACTIVE_VATS), tiny_adapter, inputs, gen_config(n=5), after=after)
    for before, now in itertools.pairwise(snaps):
        for (k0, v0), (k1, v1) in zip(before, now):
            assert k1.shape[2] == k0.shape[2] + 1
            assert torch.equal(k1[:, :, :-1], k0) and torch.equal(v1[:, :, :-1], v0)


def eager_attentions(adapter, inputs, tokens):
    ids = torch.cat([inputs.input_ids, torch.tensor([tokens], dtype=torch.long)], dim=1)
    with torch.inference_mode():
        out = adapter.model(input_ids=ids, pixel_values=inputs.pixel_values, output_attentions=True)
    return out.attentions


def test_saliency_history_and_sap_accumulators_match_eager_attentions(tiny_adapter, tiny_adapter_eager, inputs, monkeypatch):
    # Identity everywhere, with the saliency recording and the SAP accumulators forced on (zeroed
    # knobs switch them off, `active_roles`): β = 0 accumulates c without changing any score.
    n = tiny_adapter.n_layers
    forced = vasparse_module.Roles(frozenset(), frozenset(range(n)), n - 1, False)
    monkeypatch.setattr(vasparse_module, "active_roles", lambda method, n_layers: forced)
    method = VASparse(sparsity=1.0, lam=0.1, alpha=0.0, beta=0.0)
    seen = []
    run = run_method(method, tiny_adapter, inputs, gen_config(n=6), after=lambda st: seen.append(st.state.r.clone()))
    st = run.stepper
    fed = run.tokens[:-1]  # the last token was chosen but never fed
    att = eager_attentions(tiny_adapter_eager, inputs, fed)
    s, n = inputs.image_start, inputs.n_image_tokens
    r_ref = att[-1][..., s : s + n].sum(-1).mean(1)  # (1, L + t)
    assert st.state.r.shape == r_ref.shape == (1, inputs.length + len(fed))
    assert torch.allclose(st.state.r, r_ref, rtol=1e-4, atol=1e-5)
    # P at the last step: softmax over j < N−1
    n_keys = inputs.length + len(fed)
    p = st.state.saliency(n_keys)
    assert torch.allclose(p, torch.softmax(r_ref[:, : n_keys - 1], -1), atol=1e-6)
    assert [x.shape[1] for x in seen] == [inputs.length + t for t in range(len(run.tokens))]
    for layer in range(tiny_adapter.n_layers):
        c_ref = att[layer].sum(dim=2)  # column sums over every query row
        assert torch.allclose(st.state.c[layer], c_ref, rtol=1e-4, atol=1e-4), layer


# ---- SVCD --------------------------------------------------------------------------------------
def test_svcd_stop_layer_0_is_the_embedding_prior_whatever_the_mask(tiny_adapter, inputs):
    logs = {}
    for ratio in (0.0, 0.5):
        got = []
        run = run_method(
            VASparse(svcd={"mask_ratio": ratio}), tiny_adapter, inputs, gen_config(n=5),
            after=lambda st, got=got: got.append(st.contrast.last_logits.clone()),
        )  # fmt: skip
        logs[ratio] = (run.tokens, got, run.stepper.image_mask)
    (tok0, l0, m0), (tok5, l5, m5) = logs[0.0], logs[0.5]
    assert m0.numel() == 0 and m5.numel() == 128  # the mask is drawn ...
    assert tok0 == tok5 and all(torch.equal(a, b) for a, b in zip(l0, l5))  # ... and cannot matter
    a = tiny_adapter
    fed = [int(inputs.input_ids[0, -1])] + tok0[:-1]
    with torch.inference_mode():
        for tok, logit in zip(fed, l0):
            ref = a.lm_head(a.final_norm(a.embed_tokens(torch.tensor([[tok]])))).float()
            assert torch.equal(logit, ref[:, -1])


def masked_reference(adapter, inputs, masked, tokens, n_layers, *, physical: bool):
    """Layers 0…n−1 recomputed from scratch (fresh cache) on prompt + tokens, masked image tokens
    removed (physical) or kept as queries with their key columns masked."""
    with torch.inference_mode():
        embeds = adapter.build_inputs_embeds(inputs)
        if tokens:
            embeds = torch.cat([embeds, adapter.embed_tokens(torch.tensor([tokens]))], dim=1)
        T = embeds.shape[1]
        pos = torch.arange(T)
        if physical:
            keep = torch.ones(T, dtype=torch.bool)
            keep[masked] = False
            h = forward_layers(adapter, embeds[:, keep], pos[keep][None], adapter.new_cache(), n_layers)
        else:
            allowed = pos[None, :] <= pos[:, None]
            allowed[:, masked] = False
            allowed[masked, masked] = True  # a masked query still sees itself (its row is never read)
            mask = torch.zeros(T, T).masked_fill(~allowed, torch.finfo(torch.float32).min)[None, None]
            h = forward_layers(adapter, embeds, pos[None], adapter.new_cache(), n_layers, attention_mask=mask)
        return adapter.lm_head(adapter.final_norm(h[:, -1:])).float()[:, -1]


def test_svcd_branch_cached_equals_recompute_and_physical_equals_masking(tiny_adapter, inputs):
    got = []
    run = run_method(
        VASparse(svcd={"stop_layer": 2}), tiny_adapter, inputs, gen_config(n=5),
        after=lambda st: got.append(st.contrast.last_logits.clone()),
    )  # fmt: skip
    masked = run.stepper.image_mask
    assert masked.numel() == 128
    for t, logit in enumerate(got):
        phys = masked_reference(tiny_adapter, inputs, masked, run.tokens[:t], 2, physical=True)
        assert torch.allclose(logit, phys, rtol=1e-4, atol=1e-4), t
        if t in (0, len(got) - 1):
            keymask = masked_reference(tiny_adapter, inputs, masked, run.tokens[:t], 2, physical=False)
            assert torch.allclose(phys, keymask, rtol=1e-4, atol=1e-4), t


def test_svcd_full_depth_unmasked_branch_equals_the_main_logits(tiny_adapter, inputs):
    pairs = []
    method = VASparse(
        vats={"enabled": False}, sap={"enabled": False},
        svcd={"stop_layer": tiny_adapter.n_layers, "mask_ratio": 0.0, "final_norm": True},
    )  # fmt: skip
    run_method(method, tiny_adapter, inputs, gen_config(n=5), after=lambda st: pairs.append((st.last_logits, st.contrast.last_logits)))
    for main, contrast in pairs:
        assert torch.allclose(main, contrast, rtol=1e-4, atol=1e-4)
    ref = run_method(Vanilla(), tiny_adapter, inputs, gen_config(n=1))
    assert torch.allclose(pairs[0][0], ref.z[0], rtol=1e-4, atol=1e-4)  # shared embeds ≈ pixel path


def test_svcd_mask_is_per_sample(inputs):
    a = draw_image_mask(inputs, 0.5, SampleSeeds(0, "a").torch_generator("svcd_mask"))
    b = draw_image_mask(inputs, 0.5, SampleSeeds(0, "a").torch_generator("svcd_mask"))
    c = draw_image_mask(inputs, 0.5, SampleSeeds(0, "c").torch_generator("svcd_mask"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.numel() == 128 and a.unique().numel() == 128
    assert int(a.min()) >= inputs.image_start and int(a.max()) < inputs.image_start + inputs.n_image_tokens


# ---- beam search -------------------------------------------------------------------------------
def vasparse_rows(st, row):
    return {
        "contrast": st.contrast.last_logits[row],
        "r": st.state.r[row],
        **{f"c{layer}": c[row] for layer, c in st.state.c.items()},
    }


def test_beam_states_match_a_single_row_replay_of_every_hypothesis(tiny_adapter, inputs):
    method = VASparse(vats=ACTIVE_VATS, svcd={"stop_layer": 2})
    assert check_beam_replay(method, tiny_adapter, inputs, gen_config("beam", n=6), vasparse_rows) >= 1


def test_beam1_equals_greedy_for_the_full_method(tiny_adapter, inputs):
    greedy = run_method(VASparse(vats=ACTIVE_VATS), tiny_adapter, inputs, gen_config("greedy", n=8))
    beam1 = run_method(VASparse(vats=ACTIVE_VATS), tiny_adapter, inputs, gen_config("beam", n=8, beams=1))
    assert beam1.tokens == greedy.tokens


# ---- shapes, GQA, extras -----------------------------------------------------------------------
def test_336px_shapes(tiny_adapter_336, test_image, caption_prompt):
    inp = tiny_adapter_336.prepare(test_image, caption_prompt)
    assert inp.n_image_tokens == 576
    run = run_method(VASparse(vats=ACTIVE_VATS, svcd={"stop_layer": 1}), tiny_adapter_336, inp, gen_config("beam", n=3, beams=2))
    st = run.stepper
    steps = len(run.z) - 1
    assert st.image_mask.numel() == 288
    assert st.state.r.shape == (2, inp.length + steps)
    assert all(c.shape == (2, 4, inp.length + steps) for c in st.state.c.values())
    assert st.contrast.cache.get_seq_length() == inp.length - 288 + steps


def test_gqa_model_runs_and_keeps_its_cache(test_image, caption_prompt):
    from tests.conftest import tiny_checkpoint
    from vh_bench.models.llava import LlavaAdapter

    adapter = LlavaAdapter.load(tiny_checkpoint(text_kv_heads=2))
    inp = adapter.prepare(test_image, caption_prompt)
    run = run_method(VASparse(vats=ACTIVE_VATS, svcd={"stop_layer": 2}), adapter, inp, gen_config("beam", n=4, beams=2))
    assert run.tokens
    assert all(c.shape[:2] == (2, 4) for c in run.stepper.state.c.values())  # per query head


def test_extras_only_when_asked(tiny_adapter, inputs):
    gen = gen_config(n=4)
    seeds = SampleSeeds(0, "s0")
    assert VASparse().generate(tiny_adapter, inputs, gen, seeds).extras == {}
    out = VASparse(record_extras=True, vats=ACTIVE_VATS).generate(tiny_adapter, inputs, gen, seeds)
    assert set(out.extras) == {"vats_keep_fraction", "sap_sink_weight", "svcd_n_masked"}
    assert 0.85 < out.extras["vats_keep_fraction"] < 1 and 0 < out.extras["sap_sink_weight"] <= 1
    assert VASparse(record_extras=True).fingerprint() == VASparse().fingerprint()


# ---- config ------------------------------------------------------------------------------------
def test_config_defaults_match_the_spec():
    m = build_method(compose(["method=vasparse"]))
    assert isinstance(m, VASparse)
    assert m.fingerprint() == {
        "method": "vasparse", "lam": 0.1, "alpha": 0.1, "beta": 0.1, "sparsity": 0.9,
        "vats": {"enabled": True, "scope": "generated", "layers": "all", "normalize": "sum", "merge": "dpc_knn",
                 "cluster_ratio": 0.5, "knn_k": 5, "saliency_layer": -1},
        "svcd": {"enabled": True, "mask_ratio": 0.5, "stop_layer": 0, "final_norm": True, "plausibility": 0.1},
        "sap": {"enabled": True, "layers": "all"}, "kernel": "auto",
    }  # fmt: skip
    m.check(gen_config())


def test_distinct_hyperparameters_give_distinct_fingerprints():
    variants = [
        {}, {"lam": 0.2}, {"alpha": 0.2}, {"beta": 0.2}, {"sparsity": 0.8},
        {"vats": {"enabled": False}}, {"vats": {"scope": "text"}}, {"vats": {"layers": [0, 1]}},
        {"vats": {"normalize": "none"}}, {"vats": {"merge": "none"}}, {"vats": {"cluster_ratio": 1.0}},
        {"vats": {"knn_k": 3}}, {"vats": {"saliency_layer": 1}},
        {"svcd": {"enabled": False}}, {"svcd": {"mask_ratio": 0.0}}, {"svcd": {"stop_layer": 2}},
        {"svcd": {"final_norm": False}}, {"svcd": {"plausibility": 0.0}},
        {"sap": {"enabled": False}}, {"sap": {"layers": [-1]}}, {"kernel": "torch"}, {"kernel": "cpu"},
    ]  # fmt: skip
    prints = [repr(sorted(VASparse(**v).fingerprint().items())) for v in variants]
    assert len(set(prints)) == len(variants)


@pytest.mark.parametrize(
    "kw, key",
    [({"lam": -0.1}, "method.lam"), ({"sparsity": 0.0}, "method.sparsity"), ({"beta": float("nan")}, "method.beta"),
     ({"vats": {"scope": "image"}}, "method.vats.scope"), ({"vats": {"merge": "sum"}}, "method.vats.merge"),
     ({"vats": {"layers": "some"}}, "method.vats.layers"), ({"svcd": {"stop_layer": -1}}, "method.svcd.stop_layer"),
     ({"svcd": {"plausibility": 2}}, "method.svcd.plausibility"), ({"sap": {"enabled": 1}}, "method.sap.enabled"),
     ({"kernel": "gpu"}, "method.kernel")],
)  # fmt: skip
def test_bad_values_name_their_key(kw, key):
    with pytest.raises(ConfigError) as exc:
        VASparse(**kw).check(gen_config())
    assert exc.value.key == key


def test_unknown_block_key_and_out_of_range_layers_fail(tiny_adapter, inputs):
    with pytest.raises(ConfigError) as exc:
        VASparse(vats={"sparsity": 0.5})
    assert exc.value.key == "method.vats.sparsity"
    with pytest.raises(ConfigError) as exc:
        VASparse(sap={"layers": [7]}).stepper(tiny_adapter, inputs, SampleSeeds(0, "x"))
    assert exc.value.key == "method.sap.layers"


# ---- experiment presets ------------------------------------------------------------------------
def flatten(fp: dict) -> dict:
    out = {}
    for k, v in fp.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


@pytest.mark.parametrize(
    "row, check",
    [("full", {}), ("no_vats", {"vats.enabled": False}), ("no_p", {"lam": 0.0}), ("no_svcd", {"svcd.enabled": False}),
     ("no_sm", {"svcd.mask_ratio": 0.0}), ("no_sap", {"sap.enabled": False})],
)  # fmt: skip
def test_ablation_rows_switch_exactly_one_thing(row, check):
    cfg = compose(["experiment=vasparse_ablation", f"ablation={row}"])
    full = build_method(compose(["experiment=vasparse_ablation"])).fingerprint()
    got = build_method(cfg).fingerprint()
    diff = {k: v for k, v in flatten(got).items() if flatten(full)[k] != v}
    assert diff == check
    assert (cfg.generation.strategy, cfg.generation.num_beams, cfg.generation.max_new_tokens) == ("beam", 3, 64)
    assert cfg.model.prompt_template == "halc" and cfg.dataset.name == "coco"
    assert (got["lam"], got["alpha"], got["beta"], got["sparsity"]) == (check.get("lam", 0.1), 0.1, 0.1, 0.9)


@pytest.mark.parametrize(
    "row, method, strategy, beams",
    [("greedy", "vanilla", "greedy", 1), ("beam", "vanilla", "beam", 3), ("vcd", "vcd", "beam", 3),
     ("fastv", "fastv", "beam", 3), ("vasparse", "vasparse", "beam", 3)],
)  # fmt: skip
def test_paper_rows(row, method, strategy, beams):
    cfg = compose(["experiment=vasparse_paper", f"paper_row={row}"])
    assert build_method(cfg).name == method
    assert (cfg.generation.strategy, cfg.generation.num_beams, cfg.generation.max_new_tokens) == (strategy, beams, 64)
    assert cfg.model.prompt_template == "halc" and cfg.dataset.name == "coco"
    sweep = compose(["experiment=vasparse_paper"], return_hydra_config=True).hydra.sweeper.params
    assert sweep.paper_row == "greedy,beam,vcd,fastv,vasparse"
