"""The harness's KV cache is really used by every forward that is handed it (issue 19, item 1).

transformers swallows unknown keywords in `**kwargs`; a cache passed under a name the installed
version does not read would stay empty while the model builds its own, and cached decoding would
silently run every step without context. Each check here compares with a cache-free recompute of
the whole sequence, so a forward that ignored the cache fails it.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers
from packaging.version import Version

from tests.stepping import TOL
from vh_bench.decoding.branch import Branch
from vh_bench.decoding.layer_prefix import forward_layers
from vh_bench.models import cache_kwarg
from vh_bench.models.cache_kwarg import cache_keyword

N_STEPS = 6


def test_keyword_is_read_from_the_signature():
    def new(x, cache=None, **kwargs): ...
    def old(x, past_key_values=None, **kwargs): ...
    def both(x, cache=None, past_key_values=None, **kwargs): ...
    def neither(x, **kwargs): ...

    assert (cache_keyword(new), cache_keyword(old), cache_keyword(both)) == ("cache", "past_key_values", "cache")
    with pytest.raises(RuntimeError, match="neither"):
        cache_keyword(neither)


def test_installed_transformers_gets_its_supported_name():
    # transformers 5.24 introduced `cache=` (and deprecated `past_key_values=`); older 5.x lack it.
    expected = "cache" if Version(transformers.__version__) >= Version("5.24") else "past_key_values"
    from transformers import LlavaForConditionalGeneration

    assert cache_keyword(LlavaForConditionalGeneration.forward) == expected


def _full_recompute(adapter, inputs, tokens: list[int]) -> torch.Tensor:
    """Last-position logits of prompt + tokens in one cache-free forward (stock call, no harness)."""
    ids = torch.cat([inputs.input_ids, torch.tensor([tokens], dtype=torch.long)], dim=1)
    with torch.inference_mode():
        out = adapter.model(input_ids=ids, pixel_values=inputs.pixel_values, use_cache=False)
    return out.logits[:, -1].float()


def test_cached_decoding_equals_full_recompute_and_the_cache_grows_by_one(tiny_adapter, inputs):
    branch = Branch(tiny_adapter, inputs)
    with warnings.catch_warnings(record=True) as caught, torch.inference_mode():
        warnings.simplefilter("always")
        logits = branch.prefill()
        lengths = [branch.cache.get_seq_length()]
        tokens: list[int] = []
        steps = [logits]
        for _ in range(N_STEPS):
            tokens.append(int(logits.argmax(-1)))
            logits = branch.step(torch.tensor([tokens[-1]]))
            steps.append(logits)
            lengths.append(branch.cache.get_seq_length())
    assert lengths == [inputs.length + t for t in range(N_STEPS + 1)]
    for layer in branch.cache.layers:  # every layer, not only the one get_seq_length reads
        assert layer.keys.shape[-2] == inputs.length + N_STEPS
    for t, got in enumerate(steps):
        ref = _full_recompute(tiny_adapter, inputs, tokens[:t]) if t else _full_recompute(tiny_adapter, inputs, [])
        assert torch.allclose(got, ref, **TOL), t
    # Issue 16: no deprecation warning about the cache keyword on a run.
    assert not [w for w in caught if "past_key_values" in str(w.message)]


def test_a_swallowed_cache_keyword_is_caught(tiny_adapter, inputs, monkeypatch):
    # Control: a name transformers does not read (swallowed by **kwargs) must not pass silently.
    monkeypatch.setattr(cache_kwarg, "cache_keyword", lambda fn: "past_key_value")
    branch = Branch(tiny_adapter, inputs)
    with pytest.raises(RuntimeError, match="ignored the harness's KV cache"), torch.inference_mode():
        branch.prefill()


def test_layer_prefix_uses_its_cache(tiny_adapter, inputs):
    """forward_layers over prompt then one token at a time equals one cache-free call on the whole."""
    a, n = tiny_adapter, 2
    with torch.inference_mode():
        embeds = a.build_inputs_embeds(inputs)
        extra = a.embed_tokens(torch.tensor([[5, 9, 11]]))
        whole = torch.cat([embeds, extra], dim=1)
        pos = torch.arange(whole.shape[1])[None]
        ref = forward_layers(a, whole, pos, a.new_cache(), n)
        cache = a.new_cache()
        L = inputs.length
        got = [forward_layers(a, embeds, pos[:, :L], cache, n)[:, -1]]
        for i in range(extra.shape[1]):
            got.append(forward_layers(a, extra[:, i : i + 1], pos[:, L + i : L + i + 1], cache, n)[:, -1])
            assert cache.get_seq_length() == L + i + 1
        # only the layers run hold keys (a cache-ignoring layer would leave its slot empty)
        assert [layer.get_seq_length() for layer in cache.layers] == [L + 3] * n + [0] * (a.n_layers - n)
    for i, g in enumerate(got):
        assert torch.allclose(g, ref[:, L - 1 + i], **TOL), i
