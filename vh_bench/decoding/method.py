"""What a decoding method is to the harness: hyperparameters in, one `Generation` per sample out.

Concrete methods live in the top-level `methods/` package and are built by Hydra from
`configs/method/<name>.yaml` (`_target_`), so the config file is the registration.
"""

from __future__ import annotations

from dataclasses import asdict, fields, is_dataclass
from typing import Any

import torch

from vh_bench.decoding import attention, kv_cache
from vh_bench.decoding.loop import DecodeResult, Stepper, decode
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.decoding.timing import SampleTimer
from vh_bench.errors import ConfigError
from vh_bench.models.llava import LlavaAdapter, ModelInputs
from vh_bench.records import GenConfig, Generation

STRATEGIES = ("greedy", "beam", "sample")


class Method:
    """Base class. Subclasses set `name`, keep hyperparameters as attributes, implement `stepper`."""

    name: str = "method"
    strategies: tuple[str, ...] = STRATEGIES

    def hyperparameters(self) -> dict[str, Any]:
        """Everything that changes outputs; enters the run fingerprint and the results table."""
        if is_dataclass(self):
            return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}
        return {}

    def fingerprint(self) -> dict[str, Any]:
        return {"method": self.name, **self.hyperparameters()}

    def check(self, gen: GenConfig) -> None:
        """Raise ConfigError for settings this method cannot run (before any model is loaded)."""
        if gen.strategy not in self.strategies:
            raise ConfigError(
                "generation.strategy",
                f"{self.name} supports {', '.join(self.strategies)}, not {gen.strategy!r}",
            )

    def check_runtime(self, device: str, dtype: torch.dtype) -> None:
        """Raise ConfigError for settings this device and dtype cannot run (before the model loads)."""

    def stepper(self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds) -> Stepper:
        raise NotImplementedError

    def generate(
        self, adapter: LlavaAdapter, inputs: ModelInputs, gen: GenConfig, seeds: SampleSeeds
    ) -> Generation:
        with torch.inference_mode(), kv_cache.track() as kv:
            stepper = self.stepper(adapter, inputs, seeds)
            generator = seeds.torch_generator("sample") if gen.strategy == "sample" else None
            # A stepper with a `controller` gets it installed for this generation only; without one
            # the attention runs plain everywhere. Restored even if decoding raises (§1.6).
            with attention.control(adapter, getattr(stepper, "controller", None)):
                res: DecodeResult = decode(
                    stepper, gen, adapter.eos_token_id, generator=generator, timer=SampleTimer(adapter.device)
                )
            # At the end the caches are at their longest (they only grow; HALC's rollbacks aside).
            kv_bytes = kv.measure()
        return Generation(
            token_ids=res.token_ids,
            text=adapter.decode_text(res.token_ids),
            n_new_tokens=res.n_new_tokens,
            t_prefill_s=res.t_prefill_s,
            t_decode_s=res.t_decode_s,
            extras=self.extras(stepper),
            kv_cache=kv_bytes,
        )

    def extras(self, stepper: Stepper) -> dict[str, Any]:
        """Per-sample diagnostics a method wants on the sample line (cheap, optional)."""
        return {}


def _plain(value: Any) -> Any:
    if is_dataclass(value):
        return asdict(value)
    return value
