"""GrowingLayer / GrowingDynamicCache: in-place appends behave exactly like DynamicLayer's torch.cat."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from vh_bench.decoding.kv_cache import GrowingDynamicCache, GrowingLayer

B, H, D, N_LAYERS = 2, 3, 4, 3


def _kv(gen: torch.Generator, rows: int = B, n: int = 1, heads: int = H) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(rows, heads, n, D, generator=gen), torch.randn(rows, heads, n, D, generator=gen)


def _pair() -> tuple[GrowingDynamicCache, DynamicCache]:
    return GrowingDynamicCache(), DynamicCache()


def _feed(caches, gen: torch.Generator, n: int = 1, layers=range(N_LAYERS), rows: int = B):
    """Feeds the same random step to every cache; returns what each cache's update returned."""
    outs = [[] for _ in caches]
    for li in layers:
        k, v = _kv(gen, rows, n)
        for out, c in zip(outs, caches):
            out.append(c.update(k, v, li))
    return outs


def _assert_same(ours: GrowingDynamicCache, ref: DynamicCache) -> None:
    assert len(ours.layers) == len(ref.layers)
    for a, b in zip(ours.layers, ref.layers):
        assert a.get_seq_length() == b.get_seq_length()
        if b.get_seq_length():
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


def test_layers_are_growing_and_nothing_global_changes(tiny_adapter):
    cache = tiny_adapter.new_cache()
    assert isinstance(cache, GrowingDynamicCache)
    assert cache.layers and all(type(layer) is GrowingLayer for layer in cache.layers)
    assert len(cache.layers) == tiny_adapter.config.text_config.num_hidden_layers
    assert all(type(layer) is DynamicLayer for layer in DynamicCache(config=tiny_adapter.config.text_config).layers)
    assert GrowingDynamicCache().layer_class_to_replicate is GrowingLayer  # config-less: lazily replicated


def test_appends_equal_cat_and_returned_views():
    gen = torch.Generator().manual_seed(0)
    ours, ref = _pair()
    for n in (7, 1, 1, 3, 1):
        got, want = _feed((ours, ref), gen, n)
        for (gk, gv), (wk, wv) in zip(got, want):
            assert torch.equal(gk, wk) and torch.equal(gv, wv)
    _assert_same(ours, ref)
    assert ours.get_seq_length() == 13


def test_capacity_grows_geometrically_and_reuses_the_buffer():
    gen = torch.Generator().manual_seed(1)
    layer = GrowingLayer()
    k, v = _kv(gen, n=10)
    layer.update(k, v)
    cap0 = layer.capacity
    assert cap0 >= 10 + GrowingLayer.MIN_HEADROOM
    base = layer._kbuf.data_ptr()
    for _ in range(cap0 - 10):  # fills the buffer without re-allocating
        layer.update(*_kv(gen))
        assert layer._kbuf.data_ptr() == base and layer.keys.data_ptr() == base
    assert layer.get_seq_length() == cap0 == layer.capacity
    layer.update(*_kv(gen))  # one past: re-allocated, at least doubled
    assert layer.capacity >= 2 * (cap0 + 1)
    assert layer._kbuf.data_ptr() != base
    reallocs, last = 0, layer.capacity
    for _ in range(1000):
        layer.update(*_kv(gen))
        if layer.capacity != last:
            reallocs, last = reallocs + 1, layer.capacity
    assert reallocs <= 4  # amortised O(1) appends


def test_earlier_views_stay_valid():
    gen = torch.Generator().manual_seed(2)
    layer = GrowingLayer()
    k0, v0 = layer.update(*_kv(gen, n=5))
    snap_k, snap_v = k0.clone(), v0.clone()
    for _ in range(3):
        layer.update(*_kv(gen))
    assert torch.equal(k0, snap_k) and torch.equal(v0, snap_v)
    # crop, then append: the rows the old (longer) view covered must not be overwritten
    k8, v8 = layer.keys, layer.values
    snap8 = (k8.clone(), v8.clone())
    layer.crop(-4)
    layer.update(*_kv(gen, n=2))
    assert torch.equal(k8, snap8[0]) and torch.equal(v8, snap8[1])
    assert torch.equal(layer.keys[..., :4, :], snap8[0][..., :4, :])


@pytest.mark.parametrize(
    "op",
    [
        ("reorder_cache", lambda: torch.tensor([1, 1])),
        ("reorder_cache", lambda: torch.tensor([1, 0])),
        ("batch_repeat_interleave", lambda: 3),
        ("batch_select_indices", lambda: torch.tensor([1])),
        ("crop", lambda: -3),
        ("crop", lambda: 0),
    ],
    ids=["reorder-dup", "reorder-swap", "repeat", "select", "crop", "crop0"],
)
def test_rewriting_ops_then_append_match_dynamic_cache(op):
    name, arg = op
    gen = torch.Generator().manual_seed(3)
    ours, ref = _pair()
    _feed((ours, ref), gen, n=6)
    for _ in range(2):
        _feed((ours, ref), gen)
    getattr(ours, name)(arg())
    getattr(ref, name)(arg())
    _assert_same(ours, ref)
    rows = ref.layers[0].keys.shape[0]
    for n in (1, 1, 2, 1):
        got, want = _feed((ours, ref), gen, n, rows=rows)
        for (gk, gv), (wk, wv) in zip(got, want):
            assert torch.equal(gk, wk) and torch.equal(gv, wv)
    _assert_same(ours, ref)


def test_op_sequences_like_beam_search_and_halc_rollback():
    gen = torch.Generator().manual_seed(4)
    ours, ref = _pair()
    _feed((ours, ref), gen, n=5, rows=1)
    ours.batch_repeat_interleave(3)
    ref.batch_repeat_interleave(3)
    for step in range(6):
        _feed((ours, ref), gen, rows=3)
        idx = torch.tensor([step % 3, 0, 2])
        ours.reorder_cache(idx)
        ref.reorder_cache(idx)
        if step == 3:
            ours.crop(-2)
            ref.crop(-2)
        _assert_same(ours, ref)
    beam = copy.deepcopy(ours)  # HALC copies beams' caches
    beam_ref = copy.deepcopy(ref)
    _feed((beam, beam_ref), gen, n=2, rows=3)
    _assert_same(beam, beam_ref)
    _assert_same(ours, ref)  # the originals are untouched by the copies' appends
    _feed((ours, ref), gen, rows=3)
    _assert_same(ours, ref)
    ours.reset()
    ref.reset()
    _feed((ours, ref), gen, n=4, rows=3)
    _assert_same(ours, ref)


def test_deepcopy_copies_live_rows_only():
    gen = torch.Generator().manual_seed(7)
    layer = GrowingLayer()
    layer.update(*_kv(gen, n=5))
    twin = copy.deepcopy(layer)
    assert twin._kbuf is None and twin.keys.is_contiguous()
    assert twin.keys.untyped_storage().nbytes() == twin.keys.numel() * twin.keys.element_size()
    assert torch.equal(twin.keys, layer.keys) and torch.equal(twin.values, layer.values)
    assert twin.keys.data_ptr() != layer.keys.data_ptr()
    k, v = _kv(gen)
    twin.update(k, v)
    assert twin.get_seq_length() == 6 and layer.get_seq_length() == 5
    assert torch.equal(twin.keys[..., 5:, :], k) and torch.equal(twin.values[..., :5, :], layer.values)


def test_layers_of_different_lengths():
    """Physically pruned layers (FastV/Top-K) cache fewer tokens than the layers before them."""
    gen = torch.Generator().manual_seed(5)
    ours, ref = _pair()
    _feed((ours, ref), gen, n=9, layers=[0])
    _feed((ours, ref), gen, n=4, layers=[1, 2])
    for _ in range(3):
        _feed((ours, ref), gen)
    assert [c.get_seq_length() for c in ours.layers] == [12, 7, 7]
    _assert_same(ours, ref)
    ours.crop(-2)
    ref.crop(-2)
    _feed((ours, ref), gen)
    _assert_same(ours, ref)


def test_direct_assignment_and_inference_mode_boundary():
    gen = torch.Generator().manual_seed(6)
    ours, ref = _pair()
    with torch.inference_mode():
        _feed((ours, ref), gen, n=3)
    for c in (ours, ref):  # a caller replacing a layer's tensors outright
        c.layers[1].keys = c.layers[1].keys[..., 1:, :] * 2
        c.layers[1].values = c.layers[1].values[..., 1:, :] * 2
    _feed((ours, ref), gen)  # outside inference mode: the inference buffer is not written
    _assert_same(ours, ref)


def test_model_forward_bit_identical_to_dynamic_cache(tiny_adapter, inputs):
    """Prefill + greedy steps through the model: logits equal bit for bit with either cache."""
    a = tiny_adapter
    outs = []
    for cache in (a.new_cache(), DynamicCache(config=a.config.text_config)):
        logits = []
        with torch.inference_mode():
            out = a.forward(cache=cache, input_ids=inputs.input_ids, pixel_values=inputs.pixel_values)
            for _ in range(6):
                z = a.last_logits(out)
                logits.append(z)
                out = a.forward(cache=cache, input_ids=z.argmax(-1, keepdim=True))
        outs.append(logits)
    for x, y in zip(*outs):
        assert torch.equal(x, y)
