"""Test helpers: run a method's stepper through the real loop while recording what the loop saw.

`Recorder` keeps every score tensor in call order and, per row, keyed by the tokens fed so far, so
beam runs can be compared with single-row replays of their hypotheses (methods.md §8.1). Checks
between numerically different paths follow §1.9: scores close to `TOL`, tokens compared only where
every top-2 margin exceeds `MARGIN`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from vh_bench.decoding import attention
from vh_bench.decoding.loop import DecodeResult, decode
from vh_bench.decoding.method import Method
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.records import GenConfig

MARGIN = 1e-2  # 100 × atol (methods.md §1.9)
TOL: dict[str, float] = {"rtol": 1e-4, "atol": 1e-4}

Prefix = tuple[int, ...]  # the tokens fed to one row since the prompt
Snapshot = Callable[[Any, int], dict[str, torch.Tensor]]  # (stepper, row) → named per-row tensors


class Recorder:
    """Sits between the loop and a stepper and keeps what the loop received.

    `z` holds every returned score tensor (rows as the loop saw them), `by_prefix` each row's scores
    under its prefix, `states` the per-row tensors `snapshot` picks out under the same key, and
    `beam_idx` every reorder. `after(stepper)` runs after each prefill/step.
    """

    def __init__(
        self, inner: Any, after: Callable[[Any], None] | None = None, snapshot: Snapshot | None = None
    ) -> None:
        self.inner = inner
        self.after = after
        self.snapshot = snapshot
        self.prefix: list[Prefix] = [()]
        self.z: list[torch.Tensor] = []
        self.by_prefix: dict[Prefix, torch.Tensor] = {}
        self.states: dict[Prefix, dict[str, torch.Tensor]] = {}
        self.beam_idx: list[torch.Tensor] = []

    def _record(self, z: torch.Tensor) -> torch.Tensor:
        kept = z.clone()
        self.z.append(kept)
        for row, (p, scores) in enumerate(zip(self.prefix, kept)):
            self.by_prefix[p] = scores
            if self.snapshot is not None:
                self.states[p] = {k: v.clone() for k, v in self.snapshot(self.inner, row).items()}
        if self.after is not None:
            self.after(self.inner)
        return z

    def prefill(self) -> torch.Tensor:
        return self._record(self.inner.prefill())

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.prefix = [p + (int(t),) for p, t in zip(self.prefix, tokens.tolist())]
        return self._record(self.inner.step(tokens))

    def expand(self, n: int) -> None:
        self.inner.expand(n)
        self.prefix = [p for p in self.prefix for _ in range(n)]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.beam_idx.append(beam_idx.clone())
        self.inner.reorder(beam_idx)
        self.prefix = [self.prefix[i] for i in beam_idx.tolist()]


@dataclass
class Run:
    """One recorded generation: the loop's result, its recorder, and the method's stepper as it ended."""

    result: DecodeResult
    recorder: Recorder
    stepper: Any = field(repr=False)

    @property
    def tokens(self) -> list[int]:
        return self.result.token_ids

    @property
    def z(self) -> list[torch.Tensor]:
        return self.recorder.z


def run_method(
    method: Method,
    adapter: Any,
    inputs: Any,
    gen: GenConfig,
    *,
    sample_id: str = "s0",
    after: Callable[[Any], None] | None = None,
    snapshot: Snapshot | None = None,
) -> Run:
    """What `Method.generate` does (controller installed around the loop), with a recorder in between."""
    seeds = SampleSeeds(0, sample_id)
    with torch.inference_mode():
        stepper = method.stepper(adapter, inputs, seeds)
        rec = Recorder(stepper, after, snapshot)
        generator = seeds.torch_generator("sample") if gen.strategy == "sample" else None
        with attention.control(adapter, getattr(stepper, "controller", None)):
            res = decode(rec, gen, adapter.eos_token_id, generator=generator)
    return Run(res, rec, stepper)


def replay(
    method: Method, adapter: Any, inputs: Any, tokens: list[int], *, sample_id: str = "s0"
) -> tuple[torch.Tensor, Any]:
    """Teacher-force `tokens[:-1]` through a fresh single-row stepper: the scores that chose
    `tokens[-1]`, and the stepper as it was then. Same sample id as `run_method` by default, since
    per-sample draws (VCD noise, SVCD mask) must match the run being replayed."""
    with torch.inference_mode():
        stepper = method.stepper(adapter, inputs, SampleSeeds(0, sample_id))
        with attention.control(adapter, getattr(stepper, "controller", None)):
            z = stepper.prefill()
            for t in tokens[:-1]:
                z = stepper.step(torch.tensor([t], dtype=torch.long))
    return z[0], stepper


def gen_config(strategy: str = "greedy", n: int = 8, beams: int = 3) -> GenConfig:
    """`n` new tokens with `strategy`; `beams` only applies to beam search."""
    return GenConfig(strategy=strategy, max_new_tokens=n, num_beams=beams if strategy == "beam" else 1)


# ---- comparing numerically different paths (methods.md §1.9) ------------------------------------
def margins_ok(zs: list[torch.Tensor]) -> bool:
    """Every row of every step has a finite top score more than MARGIN above the runner-up, so tokens
    are comparable across numerically different paths.

    A runner-up removed by a plausibility cutoff (−inf) leaves an infinite margin: whether the paths
    cut the same tokens is checked by `assert_scores_close` (same −inf pattern), not here.
    """
    for z in zs:
        top = torch.topk(z.float(), 2, dim=-1).values
        gap = top[..., 0] - top[..., 1]
        if not torch.isfinite(top[..., 0]).all() or torch.isnan(gap).any() or float(gap.min()) <= MARGIN:
            return False
    return True


def assert_scores_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    """Step by step: as many steps, same shapes, −inf in the same places, finite entries within TOL."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, **TOL)


def assert_equivalent(a: Run, b: Run) -> None:
    """Close scores on every prefix both runs scored, and the same tokens if `a`'s margins allow.

    Keyed by prefix, the comparison stays meaningful when the runs diverge (margins too small for a
    token check) or hold their beams in another order; the prompt's scores are always shared.
    """
    common = [p for p in a.recorder.by_prefix if p in b.recorder.by_prefix]
    assert () in common
    for p in common:
        torch.testing.assert_close(a.recorder.by_prefix[p], b.recorder.by_prefix[p], **TOL)
    if margins_ok(a.z):
        assert a.tokens == b.tokens


def check_beam_replay(method: Method, adapter: Any, inputs: Any, gen: GenConfig, snapshot: Snapshot) -> int:
    """Beam-search `method`, then replay every finished hypothesis on one row, teacher-forcing its
    tokens: the replay's last scores and `snapshot` states must be close to what the beam loop used
    for it. Returns the number of hypotheses checked."""
    run = run_method(method, adapter, inputs, gen, snapshot=snapshot)
    assert run.result.hypotheses
    for hyp in run.result.hypotheses:
        prefix = tuple(hyp[:-1])  # the scores that chose the last token were computed on this history
        z, stepper = replay(method, adapter, inputs, hyp)
        torch.testing.assert_close(z, run.recorder.by_prefix[prefix], **TOL)
        want = run.recorder.states[prefix]
        for name, value in snapshot(stepper, 0).items():
            assert torch.allclose(value, want[name], **TOL), name
    return len(run.result.hypotheses)
