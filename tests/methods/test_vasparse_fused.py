"""The fused CPU kernel of VASparse's decode attention against the reference path (methods.md §6.5).

The reference path is checked against hand computations of the equations in test_vasparse.py; here
the kernel must reproduce it call by call (output, â, dropped set, SAP accumulators, saliency) on
hand-made heads covering every branch of the kernel, and token by token on the tiny model.
"""

from __future__ import annotations

import logging
import math
import os
from types import SimpleNamespace

import pytest
import torch

from methods import vasparse_fused
from methods.vasparse import VASparse
from methods.vasparse_attention import Layout, VASparseLayer, VASparseState, VATSParams
from tests.stepping import assert_scores_close, gen_config, margins_ok, run_method
from vh_bench.decoding import attention
from vh_bench.decoding.attention import AttnCall
from vh_bench.errors import ConfigError

LAYOUT = Layout(prompt_len=6, image_start=1, n_image=3)
ACTIVE_VATS = {"scope": "all"}


@pytest.fixture(scope="module")
def kernel():
    return vasparse_fused.load()  # built on first use; a failure to build fails the suite


def heads(n_keys, *, rows=1, heads=2, kv_heads=2, d=8, seed=0, capacity=None, tie=False):
    """q and cache-like K/V views `(rows, kv_heads, n_keys, d)` cut from a larger buffer (as the
    growing cache hands them out), a saliency history r and SAP accumulators c."""
    g = torch.Generator().manual_seed(seed)
    cap = capacity or n_keys
    q = torch.randn(rows, heads, 1, d, generator=g)
    k = torch.randn(rows, kv_heads, cap, d, generator=g)
    v = torch.randn(rows, kv_heads, cap, d, generator=g)
    r = torch.rand(rows, n_keys - 1, generator=g)
    if tie:  # candidates 6 … 11 share one key and one saliency: equal δ, decided by position
        k[:, :, 6:12] = k[:, :, 6:7]
        r[:, 6:12] = r[:, 6:7]
    c = torch.rand(rows, heads, n_keys - 1, generator=g) * 3
    return q, k[:, :, :n_keys], v[:, :, :n_keys], r, c


def params(**kw):
    base = dict(lam=0.1, sparsity=0.9, scope="generated", normalize="sum", merge="dpc_knn", cluster_ratio=0.5, knn_k=5)
    return VATSParams(**{**base, **kw})


def layer_pair(n_keys, vats, beta, saliency, kernel, **head_kw):
    """The same layer call through the reference path and through the kernel; returns both states
    and outputs."""
    q, k, v, r, c = heads(n_keys, **head_kw)
    groups = q.shape[1] // k.shape[1]
    module = SimpleNamespace(num_key_value_groups=groups, training=False)
    results = []
    for kern in (None, kernel):
        state = VASparseState(LAYOUT, trace=True, record=True)
        state.r = r.clone()
        state.c[0] = c.clone()
        handler = VASparseLayer(state, vats=vats, sap_beta=beta, saliency=saliency, kernel=kern)
        call = AttnCall(module, 0, "decode", q, k, v, 1 / math.sqrt(q.shape[-1]))
        assert handler.explicit(call)
        out = handler.attend(call, None)
        if kern is None:
            assert out is None  # the reference path is the explicit one
            out = attention._explicit(module, q, k, v, None, call.scaling, 0.0, handler, call)[0]
        results.append((state, out))
    return results


CASES = {
    # name: (n_keys, VATS params or None, SAP β or None, saliency layer, head options)
    "one_cluster": (17, params(), 0.1, True, {}),  # generated scope n = 10 → m = 1, c = 1
    "dpc_knn": (17, params(scope="all", sparsity=0.5), 0.1, True, {}),  # m = 8, c = 4
    "dpc_knn_k2_no_sap": (17, params(scope="all", sparsity=0.5, knn_k=2), None, False, {}),
    "singletons": (17, params(scope="all", sparsity=0.5, cluster_ratio=1.0), 0.3, False, {}),
    "one_cluster_of_eight": (17, params(scope="all", sparsity=0.5, cluster_ratio=0.1), 0.3, False, {}),
    "no_merge": (17, params(scope="all", sparsity=0.5, merge="none"), 0.1, True, {}),
    "no_normalise": (17, params(scope="all", sparsity=0.6, normalize="none"), 0.1, False, {}),
    "lam_0": (17, params(scope="all", sparsity=0.5, lam=0.0), 0.1, False, {}),
    "sap_only": (17, None, 0.5, False, {}),
    "saliency_only": (17, None, None, True, {}),
    "ties": (17, params(scope="all", sparsity=0.5), 0.1, True, {"tie": True}),
    "gqa": (17, params(scope="all", sparsity=0.5), 0.1, True, {"heads": 4, "kv_heads": 2}),
    "beams_in_cache_views": (17, params(scope="all", sparsity=0.5), 0.1, True, {"rows": 3, "capacity": 32}),
    "long": (200, params(scope="all", sparsity=0.7, knn_k=5), 0.1, True, {"d": 64, "heads": 4, "kv_heads": 4}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_kernel_call_equals_the_reference_path(kernel, case):
    n_keys, vats, beta, saliency, head_kw = CASES[case]
    (ref, out_ref), (got, out_got) = layer_pair(n_keys, vats, beta, saliency, kernel, **head_kw)
    assert out_got.shape == out_ref.shape
    torch.testing.assert_close(out_got, out_ref, rtol=1e-5, atol=1e-6)
    if vats is not None:
        assert torch.equal(got.dropped[0], ref.dropped[0])  # the same keys, in the same order
    torch.testing.assert_close(got.rows[0], ref.rows[0], rtol=1e-5, atol=1e-7)  # â
    if beta is not None:
        torch.testing.assert_close(got.c[0], ref.c[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got.sink_sum, ref.sink_sum, rtol=1e-6, atol=0)
    torch.testing.assert_close(got.r, ref.r, rtol=1e-5, atol=1e-7)


def test_ties_are_decided_by_position(kernel):
    # Six identical candidates, 8 of 16 dropped: among equal δ the later positions go first.
    n_keys, vats, beta, saliency, head_kw = CASES["ties"]
    (ref, _), (got, _) = layer_pair(n_keys, vats, beta, saliency, kernel, **head_kw)
    for h in range(2):
        drop = set(got.dropped[0][0, h].tolist())
        tied = [p for p in range(6, 12) if p in drop]
        assert tied == list(range(12 - len(tied), 12))  # a suffix of the tied block
    assert torch.equal(got.dropped[0], ref.dropped[0])


def test_nothing_dropped_and_no_sap_is_plain_attention(kernel):
    # S = 1 with saliency recording only: the kernel is softmax(s)·V, the same as sdpa.
    q, k, v, r, c = heads(17, d=16)
    state = VASparseState(LAYOUT)
    state.r = r
    handler = VASparseLayer(state, vats=params(sparsity=1.0), sap_beta=None, saliency=True, kernel=kernel)
    call = AttnCall(SimpleNamespace(num_key_value_groups=1), 0, "decode", q, k, v, 0.25)
    assert handler.explicit(call)
    out = handler.attend(call, None)
    expect = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.25).transpose(1, 2)
    torch.testing.assert_close(out, expect, rtol=1e-5, atol=1e-6)
    p = torch.softmax(q @ k.transpose(-1, -2) * 0.25, dim=-1)[:, :, 0]
    torch.testing.assert_close(state.r[:, -1], p[..., 1:4].sum(-1).mean(1))


def test_the_kernel_leaves_prefill_text_scope_and_masks_to_the_reference(kernel):
    q, k, v, r, c = heads(17)
    module = SimpleNamespace(num_key_value_groups=1)
    state = VASparseState(LAYOUT)
    state.r, state.c[0] = r, c
    scale = 0.3
    text = VASparseLayer(state, vats=params(scope="text", sparsity=0.5), sap_beta=0.1, saliency=False, kernel=kernel)
    assert text.attend(AttnCall(module, 0, "decode", q, k, v, scale), None) is None
    gen = VASparseLayer(state, vats=params(scope="all", sparsity=0.5), sap_beta=0.1, saliency=False, kernel=kernel)
    mask = torch.zeros(1, 1, 1, 17, dtype=torch.bool)
    assert gen.attend(AttnCall(module, 0, "decode", q, k, v, scale), mask) is None
    assert gen.attend(AttnCall(module, 0, "prefill", q, k, v, scale), None) is None


# ---- whole generations -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw, strategy",
    [
        ({}, "greedy"),
        ({"vats": ACTIVE_VATS, "sparsity": 0.5}, "greedy"),
        ({"vats": ACTIVE_VATS, "sparsity": 0.5, "svcd": {"stop_layer": 2}}, "beam"),
        ({"vats": {**ACTIVE_VATS, "merge": "none"}, "beta": 0.5}, "sample"),
    ],
)
def test_generations_match_the_reference_path(tiny_adapter, inputs, kw, strategy):
    gen = gen_config(strategy, n=8)
    ref = run_method(VASparse(**kw, kernel="torch"), tiny_adapter, inputs, gen)
    got = run_method(VASparse(**kw, kernel="cpu"), tiny_adapter, inputs, gen)
    assert margins_ok(ref.z)  # so the token check below is not vacuous
    assert got.tokens == ref.tokens
    assert_scores_close(got.z, ref.z)


def test_beam_state_is_reordered_with_the_kernel(tiny_adapter, inputs):
    # Accumulators and saliency history of both paths stay aligned through beam reorders.
    gen = gen_config("beam", n=6)
    states = {}
    for kern in ("torch", "cpu"):
        run = run_method(VASparse(vats=ACTIVE_VATS, sparsity=0.5, kernel=kern), tiny_adapter, inputs, gen)
        states[kern] = run.stepper.state
    ref, got = states["torch"], states["cpu"]
    assert got.r.shape == ref.r.shape and set(got.c) == set(ref.c)
    torch.testing.assert_close(got.r, ref.r, rtol=1e-4, atol=1e-6)
    for layer in ref.c:
        torch.testing.assert_close(got.c[layer], ref.c[layer], rtol=1e-4, atol=1e-5)


# ---- choosing the kernel -----------------------------------------------------------------------
def test_auto_resolves_to_the_kernel_on_cpu_float32_and_is_recorded(tiny_adapter, inputs):
    m = VASparse()
    assert m.implementation() == {"vasparse_kernel": None}
    run_method(m, tiny_adapter, inputs, gen_config(n=2))
    assert m.implementation() == {"vasparse_kernel": "cpu"}
    t = VASparse(kernel="torch")
    run = run_method(t, tiny_adapter, inputs, gen_config(n=2))
    assert t.implementation() == {"vasparse_kernel": "torch"}
    assert all(h.kernel is None for h in run.stepper.handlers.values())


def test_resolution_rules(monkeypatch, caplog):
    assert vasparse_fused.resolve("torch", "cpu", torch.float32) == "torch"
    assert vasparse_fused.resolve("auto", "cpu", torch.bfloat16) == "torch"
    assert vasparse_fused.resolve("auto", "cuda:0", torch.float32) == "triton"  # triton: a dev dependency
    with pytest.raises(ConfigError) as exc:
        vasparse_fused.resolve("cpu", "cpu", torch.float16)
    assert exc.value.key == "method.kernel"
    with pytest.raises(ConfigError):
        vasparse_fused.resolve("gpu", "cpu", torch.float32)

    def broken():
        raise vasparse_fused.KernelUnavailable("no compiler here")

    monkeypatch.setattr(vasparse_fused, "load", broken)
    vasparse_fused._warn_fallback.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert vasparse_fused.resolve("auto", "cpu", torch.float32) == "torch"
    assert "no compiler here" in caplog.text  # labelled, not silent
    with pytest.raises(ConfigError) as exc:
        vasparse_fused.resolve("cpu", "cpu", torch.float32)
    assert "no compiler here" in str(exc.value)


def test_ninja_from_the_venv_is_found_without_activation(monkeypatch):
    # `make` runs .venv/bin/python without activating the venv: the pip package's ninja binary is
    # not on PATH then, and torch's extension builder only looks there.
    import ninja  # a declared dependency: its absence must fail, not skip

    monkeypatch.setattr(vasparse_fused.shutil, "which", lambda name: None)
    monkeypatch.setenv("PATH", "/nowhere")
    vasparse_fused._ninja_on_path()
    assert os.environ["PATH"].split(os.pathsep)[0] == ninja.BIN_DIR


# ---- the build message (issue 16): "building" only when a compile follows ---------------------------
@pytest.fixture
def fresh_load():
    vasparse_fused.load.cache_clear()
    yield vasparse_fused.load
    vasparse_fused.load.cache_clear()  # never leave a fake module cached for later tests


def test_a_cached_kernel_loads_without_a_building_message(kernel, fresh_load, caplog):
    with caplog.at_level(logging.DEBUG, logger=vasparse_fused.__name__):
        fresh_load()  # built by the `kernel` fixture already: a cache hit
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "building" in m], messages
    assert [m for m in messages if "cached" in m]


def test_an_uncached_kernel_says_building(tmp_path, monkeypatch, fresh_load, caplog):
    import torch.utils.cpp_extension as cpp

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # an empty cache
    monkeypatch.setattr(cpp, "load", lambda **kw: SimpleNamespace(name=kw["name"]))  # no real compile
    with caplog.at_level(logging.INFO, logger=vasparse_fused.__name__):
        fresh_load()
    assert [r for r in caplog.records if "building the VASparse CPU kernel" in r.getMessage()]


def test_a_stale_build_lock_is_removed_and_a_fresh_one_kept(tmp_path, monkeypatch):
    """A builder killed mid-build leaves `lock`; torch would wait for it forever."""
    import os
    import time

    from methods import vasparse_fused

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    from torch.utils.cpp_extension import _get_build_directory

    build = tmp_path / "some_kernel"
    build.mkdir()
    assert _get_build_directory("some_kernel", verbose=False) == str(build)
    lock = build / "lock"
    lock.touch()
    assert not vasparse_fused.clear_stale_lock("some_kernel") and lock.exists()  # a build may be running
    old = time.time() - vasparse_fused.STALE_LOCK_S - 5
    os.utime(lock, (old, old))
    assert vasparse_fused.clear_stale_lock("some_kernel") and not lock.exists()
