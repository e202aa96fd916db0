"""Test helpers: run a method's stepper through the real loop while recording every score row.

`Recorder` keys each score row by the tokens fed so far, so beam runs can be compared with
single-row replays of their hypotheses (methods.md §8.1), and equality checks between numerically
different paths follow the top-2 margin rule of §1.9.
"""

from __future__ import annotations

from typing import Any

import torch

from vh_bench.decoding import attention
from vh_bench.decoding.loop import DecodeResult, decode
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.records import GenConfig

MARGIN = 1e-2  # 100 × atol (methods.md §1.9)
TOL = dict(rtol=1e-4, atol=1e-4)


class Recorder:
    """Forwards to a stepper; records the scores returned for every fed prefix (one per row)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.controller = getattr(inner, "controller", None)
        self.prefix: list[tuple[int, ...]] = [()]
        self.by_prefix: dict[tuple[int, ...], torch.Tensor] = {}
        self.steps: list[torch.Tensor] = []  # the scores of every call, rows as the loop saw them

    def __getattr__(self, name: str) -> Any:  # e.g. `pruning`, `branch`
        return getattr(self.inner, name)

    def _record(self, z: torch.Tensor) -> torch.Tensor:
        self.steps.append(z.detach().clone())
        for p, row in zip(self.prefix, z):
            self.by_prefix[p] = row.detach().clone()
        return z

    def prefill(self) -> torch.Tensor:
        self.prefix = [()]
        return self._record(self.inner.prefill())

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.prefix = [p + (int(t),) for p, t in zip(self.prefix, tokens.tolist())]
        return self._record(self.inner.step(tokens))

    def expand(self, n: int) -> None:
        self.inner.expand(n)
        self.prefix = [p for p in self.prefix for _ in range(n)]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.inner.reorder(beam_idx)
        self.prefix = [self.prefix[i] for i in beam_idx.tolist()]


def run(method, adapter, inputs, gen: GenConfig, sample_id: str = "s0") -> tuple[DecodeResult, Recorder]:
    """What `Method.generate` does, with a recorder between the loop and the method's stepper."""
    seeds = SampleSeeds(0, sample_id)
    with torch.inference_mode():
        rec = Recorder(method.stepper(adapter, inputs, seeds))
        g = seeds.torch_generator("sample") if gen.strategy == "sample" else None
        with attention.control(adapter, rec.controller):
            res = decode(rec, gen, adapter.eos_token_id, generator=g)
    return res, rec


def replay(method, adapter, inputs, tokens: list[int]) -> tuple[torch.Tensor, Any]:
    """Teacher-force `tokens[:-1]` through a fresh single-row stepper; the scores that chose tokens[-1]."""
    with torch.inference_mode():
        stepper = method.stepper(adapter, inputs, SampleSeeds(0, "replay"))
        with attention.control(adapter, getattr(stepper, "controller", None)):
            z = stepper.prefill()
            for t in tokens[:-1]:
                z = stepper.step(torch.tensor([t], dtype=torch.long))
    return z[0], stepper


def top2_margin(z: torch.Tensor) -> float:
    top = torch.topk(z.float(), 2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def assert_equivalent(a: tuple[DecodeResult, Recorder], b: tuple[DecodeResult, Recorder]) -> None:
    """Same tokens and close logits, where the margins allow a token comparison (§1.9).

    Logits are compared on every prefix both runs scored. Tokens must be identical when every score
    row of `a` has a top-2 margin above 1e-2; otherwise the logit comparison alone decides.
    """
    (ra, reca), (rb, recb) = a, b
    common = [p for p in reca.by_prefix if p in recb.by_prefix]
    assert () in common
    for p in common:
        torch.testing.assert_close(reca.by_prefix[p], recb.by_prefix[p], **TOL)
    margins_ok = all(top2_margin(z) > MARGIN for z in reca.steps)
    if margins_ok:
        assert ra.token_ids == rb.token_ids
    else:  # documented fallback: at least the shared prefix scored identically
        assert len(common) >= 1


def margins_ok(rec: Recorder) -> bool:
    return all(top2_margin(z) > MARGIN for z in rec.steps)
