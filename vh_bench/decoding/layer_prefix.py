"""Run only the first decoder layers on given embeddings and positions (an early-exit stream).

VASparse's SVCD branch with `stop_layer = m > 0` (methods.md §6.3) needs layers 0 … m−1 on a
sequence whose masked image tokens are physically removed, with the remaining tokens at their
*original* RoPE positions, and its own cache. The stock forward runs every layer, so this mirrors
`LlamaModel.forward`'s body (mask, rotary embeddings, layer calls) up to layer m.

It reads the adapter's `language_model` (config and rotary embedding) because `LlavaAdapter` has no
method for it yet; it belongs there (see the VASparse report), and callers only see this function.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.masking_utils import create_causal_mask

from vh_bench.models.cache_kwarg import cache_keyword, cache_kwargs
from vh_bench.models.llava import LlavaAdapter


def forward_layers(
    adapter: LlavaAdapter,
    inputs_embeds: torch.Tensor,
    position_ids: torch.Tensor,
    cache: Any,
    n_layers: int,
    *,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Hidden states `(rows, q_len, hidden)` after decoder layer `n_layers − 1` (no final norm).

    `position_ids (rows or 1, q_len)` may have gaps; the causal structure comes from the order of the
    sequence (and the cache), never from position values. M-RoPE positions `(3, rows, q_len)`
    (Qwen2.5-VL, from `adapter.rope_position_ids`) feed the rotary embedding only: the mask and the
    layers get no 1-D positions, as in `Qwen2_5_VLTextModel.forward`. A 4D additive `attention_mask`
    replaces the causal mask (tests use it to compare physical removal with key masking).
    """
    lm = adapter.language_model
    if not 0 <= n_layers <= adapter.n_layers:
        raise ValueError(f"cannot run {n_layers} of {adapter.n_layers} decoder layers")
    text_positions = position_ids if position_ids.dim() == 2 else None
    if attention_mask is None:
        # With a cache the position ids are never read as packed-sequence boundaries.
        attention_mask = create_causal_mask(
            config=lm.config,
            inputs_embeds=inputs_embeds,
            attention_mask=None,
            position_ids=text_positions,
            **{cache_keyword(create_causal_mask): cache},
        )
    position_embeddings = lm.rotary_emb(inputs_embeds, position_ids=position_ids)
    hidden = inputs_embeds
    for layer in adapter.layers[:n_layers]:
        hidden = layer(
            hidden,
            attention_mask=attention_mask,
            position_embeddings=position_embeddings,
            position_ids=text_positions,
            use_cache=True,
            **cache_kwargs(layer, cache),
        )
    return hidden
