"""FastV (methods.md §4): drop a fraction of the image tokens after layer K−1, once, at prefill."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vh_bench.decoding.method import Method
from vh_bench.decoding.pruning import MODES, PruningStepper, image_pruning_stepper, round_half_up
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError, is_int, is_number
from vh_bench.models.llava import LlavaAdapter, ModelInputs
from vh_bench.records import GenConfig


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError("method.mode", f"{mode!r} is not one of {', '.join(MODES)}")


@dataclass
class FastV(Method):
    """Layers 0…k−1 see every token; layers ≥ k see the text plus the kept (1−ratio) image tokens."""

    name = "fastv"
    k: int = 2  # first layer that sees the pruned sequence; ranking at layer k−1
    ratio: float = 0.5  # fraction of image tokens dropped
    mode: str = "physical"  # physical | mask (verification)

    def check(self, gen: GenConfig) -> None:
        super().check(gen)
        if not is_int(self.k) or self.k < 1:
            raise ConfigError("method.k", f"must be an integer >= 1, got {self.k!r}", "FastV ranks at layer k-1")
        if not is_number(self.ratio) or not 0.0 <= float(self.ratio) < 1.0:
            raise ConfigError(
                "method.ratio", f"must be in [0, 1), got {self.ratio!r}", "the fraction of image tokens dropped"
            )
        check_mode(self.mode)

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
