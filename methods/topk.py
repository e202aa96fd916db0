"""Top-K, VASparse's "Vanilla Top-K" baseline (methods.md §5): FastV's machinery at another layer.

Two readings of the paper's "Vanilla Top-K, keeping tokens with top-K scores in the 1-th layer":

* `mode=physical` (**default**) / `mask`: rank the image tokens by the last prompt token's
  head-averaged attention at `layer`, keep `keep_ratio` of them for every later layer, once, at
  prefill. Equivalent to FastV with k = layer + 1 and ratio = 1 − keep_ratio. The default because
  the paper lists Top-K with the token-sparsity baselines (FastV, SparseVLM) whose "retain 75% of
  tokens" is a prefill budget of visual tokens, and this reading is the one methods.md §5 decided.
* `mode=decode`: VASparse's own per-step selection (eq. (4)) with λ = 0 and no merge: at every
  decode step, in every layer ≥ `layer`, each head keeps the top `keep_ratio` of all earlier keys by
  s² and drops the rest (the current key always stays); no SVCD, no SAP. Prefill is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from methods.vasparse import VASparse, VASparseStepper
from vh_bench.decoding.method import Method
from vh_bench.decoding.pruning import PruningStepper, image_pruning_stepper, round_half_up
from vh_bench.decoding.seeding import SampleSeeds
from methods.settings import TOPK_DECODE, check_topk
from vh_bench.errors import ConfigError
from vh_bench.models.llava import LlavaAdapter, ModelInputs
from vh_bench.records import GenConfig


DECODE = TOPK_DECODE


@dataclass
class TopK(Method):
    name = "topk"
    layer: int = 0  # ranking layer ("1-th layer" read as the first); negatives count from the end
    keep_ratio: float = 0.75  # fraction of image tokens kept ("retain 75% of tokens")
    mode: str = "physical"  # physical | mask (verification) | decode (per-step VATS with λ = 0)

    def check(self, gen: GenConfig) -> None:
        super().check(gen)
        check_topk(self)

    def n_keep(self, n_image: int) -> int:
        return round_half_up(float(self.keep_ratio) * n_image)

    def decode_selection(self, n_layers: int) -> VASparse:
        """`mode=decode`: VASparse with only VATS on, λ = 0, S = keep_ratio, every earlier key a
        candidate, dropped keys masked (no merge), in layers `layer … n_layers−1`. The torch
        reference path, so that the selection is the same on every device."""
        first = self.layer + n_layers if self.layer < 0 else self.layer
        return VASparse(
            lam=0.0, alpha=0.0, beta=0.0, sparsity=float(self.keep_ratio),
            vats={"scope": "all", "merge": "none", "layers": list(range(first, n_layers))},
            svcd={"enabled": False}, sap={"enabled": False}, kernel="torch",
        )  # fmt: skip

    def stepper(
        self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds
    ) -> PruningStepper | VASparseStepper:
        if not -adapter.n_layers <= self.layer < adapter.n_layers:
            raise ConfigError("method.layer", f"{self.layer} is out of range for {adapter.n_layers} decoder layers")
        if self.mode == DECODE:
            return self.decode_selection(adapter.n_layers).stepper(adapter, inputs, seeds)
        return image_pruning_stepper(
            adapter, inputs, rank_layer=self.layer, n_keep=self.n_keep(inputs.n_image_tokens), mode=self.mode
        )

    def extras(self, stepper: PruningStepper | VASparseStepper) -> dict[str, Any]:
        return stepper.extras() if isinstance(stepper, PruningStepper) else {}
