"""VCD, Visual Contrastive Decoding (methods.md §3; arXiv 2311.16922).

The contrast branch sees the same tokens as the main branch but a diffusion-noised image. It owns its
own KV cache in every mode: either a second `Branch` (`batched=false`) or rows [B, 2B) of a 2B-row
batch whose rows [0, B) are the main branch (`batched=true`). Third-party copies reused the clean
cache after the first token (§3.5 flaw 1); here that cannot happen by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import torch

from vh_bench.decoding.branch import Branch
from vh_bench.decoding.contrast import contrast_scores, plausibility_cutoff
from vh_bench.decoding.method import Method
from vh_bench.decoding.seeding import SampleSeeds
from methods.settings import NOISE_STEPS, check_vcd
from vh_bench.models.llava import LlavaAdapter, ModelInputs
from vh_bench.records import GenConfig



@lru_cache(maxsize=None)
def noise_coefficients(noise_step: int) -> tuple[float, float]:
    """(sqrt(ᾱ_t), sqrt(1 − ᾱ_t)) of VCD's DDPM schedule, `t` 0-based (methods.md §3.1), in fp32."""
    betas = torch.sigmoid(torch.linspace(-6, 6, NOISE_STEPS, dtype=torch.float32)) * (0.5e-2 - 1e-5) + 1e-5
    alpha_bar = torch.cumprod(1 - betas, dim=0)
    return float(torch.sqrt(alpha_bar[noise_step])), float(torch.sqrt(1 - alpha_bar[noise_step]))


def diffusion_noise(pixel_values: torch.Tensor, noise_step: int, generator: torch.Generator) -> torch.Tensor:
    """x_cd = sqrt(ᾱ_t)·x + sqrt(1−ᾱ_t)·ε on the *normalised* pixels; no clamping, no renormalising.

    ε is drawn on CPU in fp32 with the per-sample generator so the noise does not depend on the
    device; the arithmetic is fp32 like the official code (which noises before casting to fp16).
    """
    a, b = noise_coefficients(noise_step)
    eps = torch.randn(pixel_values.shape, generator=generator, dtype=torch.float32, device="cpu")
    x = pixel_values.float()
    return (a * x + b * eps.to(x.device)).to(pixel_values.dtype)


class VCDStepper:
    """Main + distorted stream; scores are the contrast of their last-position logits (§3.2–3.3)."""

    def __init__(self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds, method: "VCD") -> None:
        self.adapter = adapter
        self.inputs = inputs
        self.seeds = seeds
        self.method = method
        self.rows = 1
        self.pixel_values_cd: torch.Tensor | None = None
        self.main: Branch | None = None  # batched=false
        self.contrast: Branch | None = None  # batched=false
        self.pair: Branch | None = None  # batched=true: rows [0, B) main, [B, 2B) contrast
        self.last_logits: torch.Tensor | None = None
        self.last_contrast_logits: torch.Tensor | None = None

    def _combine(self, logits: torch.Tensor, logits_cd: torch.Tensor | None) -> torch.Tensor:
        self.last_logits, self.last_contrast_logits = logits, logits_cd
        if logits_cd is None:  # α = 0: (1+0)·l − 0·l_cd = l exactly; the cutoff on l still applies
            return plausibility_cutoff(logits.float(), logits.float(), self.method.beta)
        return contrast_scores(logits, logits_cd, self.method.alpha, self.method.beta)

    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return z[: self.rows], z[self.rows :]

    def prefill(self) -> torch.Tensor:
        # Noising happens here, inside the timed region (methods.md §1.8).
        pv = self.inputs.pixel_values
        if self.method.alpha == 0:
            # No contrast row: the 2-row batch would give the main row other rounding than vanilla's
            # 1-row forward (3e-2 in bfloat16), for a contrast weighted by zero.
            self.main = Branch(self.adapter, self.inputs)
            return self._combine(self.main.prefill(), None)
        self.pixel_values_cd = diffusion_noise(pv, self.method.noise_step, self.seeds.torch_generator("vcd_noise"))
        if self.method.batched:
            pair_inputs = replace(self.inputs, input_ids=self.inputs.input_ids.repeat(2, 1))
            self.pair = Branch(self.adapter, pair_inputs, pixel_values=torch.cat([pv, self.pixel_values_cd]))
            return self._combine(*self._split(self.pair.prefill()))
        self.main = Branch(self.adapter, self.inputs)
        self.contrast = Branch(self.adapter, self.inputs, pixel_values=self.pixel_values_cd)
        return self._combine(self.main.prefill(), self.contrast.prefill())

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pair is not None:
            return self._combine(*self._split(self.pair.step(torch.cat([tokens, tokens]))))
        if self.contrast is None:
            return self._combine(self.main.step(tokens), None)
        return self._combine(self.main.step(tokens), self.contrast.step(tokens))

    def expand(self, n: int) -> None:
        # batch_repeat_interleave keeps the halves apart: [m, c] → [m]*n + [c]*n.
        for branch in (self.pair, self.main, self.contrast):
            if branch is not None:
                branch.expand(n)
        self.rows *= n

    def reorder(self, beam_idx: torch.Tensor) -> None:
        if self.pair is not None:
            self.pair.reorder(torch.cat([beam_idx, beam_idx + self.rows]))
            return
        self.main.reorder(beam_idx)
        if self.contrast is not None:
            self.contrast.reorder(beam_idx)

    @property
    def caches(self) -> tuple[object, object | None]:
        """(main cache, contrast cache); the same object twice only in batched mode (one 2B-row batch),
        no contrast cache with α = 0."""
        if self.pair is not None:
            return self.pair.cache, self.pair.cache
        return self.main.cache, None if self.contrast is None else self.contrast.cache


@dataclass
class VCD(Method):
    """Keys of methods.md §9 (`method.alpha`, `method.beta`, `method.noise_step`, `method.batched`)."""

    alpha: float = 1.0
    beta: float = 0.1
    noise_step: int = 500
    batched: bool = True
    name = "vcd"

    def check(self, gen: GenConfig) -> None:
        super().check(gen)
        check_vcd(self)

    def stepper(self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds) -> VCDStepper:
        return VCDStepper(adapter, inputs, seeds, self)
