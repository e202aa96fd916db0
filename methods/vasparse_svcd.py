"""SVCD's contrast stream (VASparse eq. (6); methods.md §6.3): a cheap, visually sparse forward.

A random `mask_ratio` fraction of the image tokens is removed (once per sample, shared by all beams
and steps); only the first `stop_layer` decoder layers run, then the final norm (optional) and the LM
head at the last position. With `stop_layer = 0` no layer runs at all: the logits are
`lm_head(norm(embed(x)))` of the last fed token, which the image mask cannot influence (§6.6).
"""

from __future__ import annotations

import torch

from vh_bench.decoding.pruning import round_half_up
from vh_bench.decoding.layer_prefix import forward_layers
from vh_bench.models.llava import LlavaAdapter, ModelInputs


def draw_image_mask(inputs: ModelInputs, mask_ratio: float, generator: torch.Generator) -> torch.Tensor:
    """Positions of the masked image tokens, ascending; uniform without replacement (`svcd_mask` seed)."""
    n_mask = round_half_up(mask_ratio * inputs.n_image_tokens)
    pick = torch.randperm(inputs.n_image_tokens, generator=generator)[:n_mask]
    return (pick + inputs.image_start).sort().values


def kept_positions(length: int, masked: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(length, dtype=torch.bool)
    keep[masked] = False
    return torch.nonzero(keep).flatten()


class EmbeddingContrast:
    """`stop_layer = 0`: no cache, no image; per-row logits of the last fed token's embedding.

    They depend on the token id alone, so each distinct id is computed once per sample (one row,
    the same computation every time, hence exact) and looked up when it comes back. The rows
    returned are the cached tensors: consumers must not edit them in place (none does).
    """

    def __init__(self, adapter: LlavaAdapter, inputs: ModelInputs, *, final_norm: bool) -> None:
        self.adapter = adapter
        self.inputs = inputs
        self.final_norm = final_norm
        self.last_logits: torch.Tensor | None = None
        self._by_token: dict[int, torch.Tensor] = {}

    def _token_logits(self, token: int) -> torch.Tensor:
        row = self._by_token.get(token)
        if row is None:
            ids = torch.tensor([[token]], dtype=torch.long, device=self.adapter.device)
            h = self.adapter.embed_tokens(ids)
            if self.final_norm:
                h = self.adapter.final_norm(h)
            row = self.adapter.lm_head(h)[:, -1, :].float()  # (1, V)
            self._by_token[token] = row
        return row

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        ids = tokens.reshape(-1).tolist()  # the loop's tokens live on the host
        rows = [self._token_logits(t) for t in ids]
        self.last_logits = rows[0] if len(rows) == 1 else torch.cat(rows, dim=0)
        return self.last_logits

    def prefill(self, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        return self._logits(self.inputs.input_ids[:, -1])

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._logits(tokens)

    def expand(self, n: int) -> None:
        pass

    def reorder(self, beam_idx: torch.Tensor) -> None:
        pass


class SparseContrastBranch:
    """`stop_layer = m > 0`: layers 0 … m−1 on the prompt without the masked image tokens, own cache.

    The remaining tokens keep their original positions (RoPE from the original position ids, which
    the adapter maps to its family's rotary positions: M-RoPE's 3-D ones on Qwen2.5-VL); each decode
    step embeds the new token at its original position `N−1`.
    """

    def __init__(
        self, adapter: LlavaAdapter, inputs: ModelInputs, masked: torch.Tensor, *, stop_layer: int, final_norm: bool
    ) -> None:
        self.adapter = adapter
        self.inputs = inputs
        self.stop_layer = stop_layer
        self.final_norm = final_norm
        self.keep = kept_positions(inputs.length, masked).to(adapter.device)
        self.cache = adapter.new_cache()
        self.next_position = inputs.length
        self.last_logits: torch.Tensor | None = None

    def _logits(self, embeds: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        h = forward_layers(self.adapter, embeds, positions, self.cache, self.stop_layer)[:, -1:, :]
        if self.final_norm:
            h = self.adapter.final_norm(h)
        self.last_logits = self.adapter.lm_head(h)[:, -1, :].float()
        return self.last_logits

    def prefill(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """`inputs_embeds (1, L, hidden)`: the main branch's shared embeddings (§1.5)."""
        positions = self.adapter.rope_position_ids(self.inputs, self.keep[None])
        return self._logits(inputs_embeds.index_select(1, self.keep), positions)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens.view(-1, 1).to(self.adapter.device)
        positions = self.adapter.rope_position_ids(self.inputs, torch.full_like(tokens, self.next_position))
        self.next_position += 1
        return self._logits(self.adapter.embed_tokens(tokens), positions)

    def expand(self, n: int) -> None:
        if n > 1:
            self.cache.batch_repeat_interleave(n)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.cache.reorder_cache(beam_idx.to(self.adapter.device))
