"""FastV (methods.md §4): drop a fraction of the image tokens after layer K−1, once, at prefill."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vh_bench.decoding.method import Method
from vh_bench.decoding.pruning import PruningStepper, image_pruning_stepper, round_half_up
from vh_bench.decoding.seeding import SampleSeeds
from methods.settings import check_fastv
from vh_bench.errors import ConfigError
from vh_bench.models.llava import LlavaAdapter, ModelInputs
from vh_bench.records import GenConfig


@dataclass
class FastV(Method):
    """Layers 0…k−1 see every token; layers ≥ k see the text plus the kept (1−ratio) image tokens."""

    name = "fastv"
    k: int = 2  # first layer that sees the pruned sequence; ranking at layer k−1
    ratio: float = 0.5  # fraction of image tokens dropped
    mode: str = "physical"  # physical | mask (verification)

    def check(self, gen: GenConfig) -> None:
        super().check(gen)
        check_fastv(self)

    def n_keep(self, n_image: int) -> int:
        return round_half_up((1.0 - float(self.ratio)) * n_image)

    def stepper(self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds) -> PruningStepper:
        if self.k > adapter.n_layers:
            raise ConfigError("method.k", f"{self.k} exceeds the model's {adapter.n_layers} decoder layers")
        return image_pruning_stepper(
            adapter, inputs, rank_layer=self.k - 1, n_keep=self.n_keep(inputs.n_image_tokens), mode=self.mode
        )

    def extras(self, stepper: PruningStepper) -> dict[str, Any]:
        return stepper.extras()
