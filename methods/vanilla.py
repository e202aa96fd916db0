"""Vanilla decoding (methods.md §2): the model's own scores through the shared loop."""

from __future__ import annotations

from dataclasses import dataclass

from vh_bench.decoding.branch import Branch
from vh_bench.decoding.method import Method
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.models.llava import LlavaAdapter, ModelInputs


@dataclass
class Vanilla(Method):
    name = "vanilla"

    def stepper(self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds) -> Branch:
        return Branch(adapter, inputs)
