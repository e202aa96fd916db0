"""A forward stream of one sample with its own KV cache (methods.md §1.5).

The main stream of every method is a `Branch`; VCD's noised image, VASparse's contrast and HALC's
views are further `Branch`es. Each owns a fresh `DynamicCache`: caches are never shared by reference
(the shared-cache bug of third-party VCD copies cannot happen by construction).
"""

from __future__ import annotations

import torch

from vh_bench.models.adapter import Adapter, ModelInputs


class Branch:
    """Prefill from pixels or embeddings, then one token per row per step; rows = beams."""

    def __init__(
        self,
        adapter: Adapter,
        inputs: ModelInputs,
        *,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> None:
        self.adapter = adapter
        self.inputs = inputs
        self._pixel_values = inputs.pixel_values if pixel_values is None and inputs_embeds is None else pixel_values
        self._inputs_embeds = inputs_embeds
        self.cache = adapter.new_cache()

    def prefill(self) -> torch.Tensor:
        out = self.adapter.forward(
            cache=self.cache,
            input_ids=self.inputs.input_ids,
            pixel_values=self._pixel_values if self._inputs_embeds is None else None,
            inputs_embeds=self._inputs_embeds,
            vision_inputs=self.inputs.vision_inputs,
        )
        return self.adapter.last_logits(out)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.adapter.forward(cache=self.cache, input_ids=tokens.view(-1, 1).to(self.adapter.device))
        return self.adapter.last_logits(out)

    def expand(self, n: int) -> None:
        if n > 1:
            self.cache.batch_repeat_interleave(n)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.cache.reorder_cache(beam_idx.to(self.adapter.device))
