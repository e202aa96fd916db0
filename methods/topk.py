"""Top-K, VASparse's "Vanilla Top-K" baseline (methods.md §5): FastV's machinery at another layer.

Rank the image tokens by the last prompt token's head-averaged attention at `layer`, keep
`keep_ratio` of them for every later layer. Equivalent to FastV with k = layer + 1 and
ratio = 1 − keep_ratio.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from methods.fastv import check_mode
from vh_bench.decoding.method import Method
from vh_bench.decoding.pruning import PruningStepper, image_pruning_stepper, round_half_up
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError, is_int, is_number
from vh_bench.models.llava import LlavaAdapter, ModelInputs
from vh_bench.records import GenConfig


@dataclass
class TopK(Method):
    name = "topk"
    layer: int = 0  # ranking layer ("1-th layer" read as the first); negatives count from the end
    keep_ratio: float = 0.75  # fraction of image tokens kept ("retain 75% of tokens")
    mode: str = "physical"  # physical | mask (verification)

    def check(self, gen: GenConfig) -> None:
        super().check(gen)
        if not is_int(self.layer):
            raise ConfigError("method.layer", f"must be an integer layer index, got {self.layer!r}")
        if not is_number(self.keep_ratio) or not 0.0 < float(self.keep_ratio) <= 1.0:
            raise ConfigError("method.keep_ratio", f"must be in (0, 1], got {self.keep_ratio!r}")
        check_mode(self.mode)

    def n_keep(self, n_image: int) -> int:
        return round_half_up(float(self.keep_ratio) * n_image)

    def stepper(self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds) -> PruningStepper:
        if not -adapter.n_layers <= self.layer < adapter.n_layers:
            raise ConfigError("method.layer", f"{self.layer} is out of range for {adapter.n_layers} decoder layers")
        return image_pruning_stepper(
            adapter, inputs, rank_layer=self.layer, n_keep=self.n_keep(inputs.n_image_tokens), mode=self.mode
        )

    def extras(self, stepper: PruningStepper) -> dict[str, Any]:
        return stepper.extras()
