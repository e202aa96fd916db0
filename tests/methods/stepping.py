"""Run a method's stepper through the shared loop while recording what the loop saw (method tests)."""

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

TOKEN_MARGIN = 1e-2  # methods.md §1.9: token equality across numerically different paths needs this margin


class Recorder:
    """Wraps a stepper; keeps every score tensor the loop received and calls `after` after each call."""

    def __init__(self, inner: Any, after: Callable[[Any], None] | None = None) -> None:
        self.inner = inner
        self.after = after
        self.z: list[torch.Tensor] = []
        self.beam_idx: list[torch.Tensor] = []

    @property
    def controller(self) -> Any:
        return getattr(self.inner, "controller", None)

    def _keep(self, z: torch.Tensor) -> torch.Tensor:
        self.z.append(z.clone())
        if self.after is not None:
            self.after(self.inner)
        return z

    def prefill(self) -> torch.Tensor:
        return self._keep(self.inner.prefill())

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._keep(self.inner.step(tokens))

    def expand(self, n: int) -> None:
        self.inner.expand(n)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.beam_idx.append(beam_idx.clone())
        self.inner.reorder(beam_idx)


@dataclass
class Run:
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
) -> Run:
    """What `Method.generate` does (controller installed around the loop), keeping the stepper."""
    seeds = SampleSeeds(0, sample_id)
    with torch.inference_mode():
        stepper = method.stepper(adapter, inputs, seeds)
        rec = Recorder(stepper, after)
        generator = seeds.torch_generator("sample") if gen.strategy == "sample" else None
        with attention.control(adapter, getattr(stepper, "controller", None)):
            res = decode(rec, gen, adapter.eos_token_id, generator=generator)
    return Run(res, rec, stepper)


def margins_ok(zs: list[torch.Tensor]) -> bool:
    """Every step's top-2 margin (row 0) exceeds TOKEN_MARGIN, so tokens are comparable across paths."""
    for z in zs:
        top = torch.topk(z[0].float(), 2).values
        if not torch.isfinite(top).all() or float(top[0] - top[1]) <= TOKEN_MARGIN:
            return False
    return True


def assert_scores_close(a: list[torch.Tensor], b: list[torch.Tensor], tol: float = 1e-4) -> None:
    """Same length, same −inf pattern, finite entries close (methods.md §1.9)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.shape == y.shape
        fx, fy = torch.isfinite(x), torch.isfinite(y)
        assert torch.equal(fx, fy)
        assert torch.allclose(x[fx], y[fy], rtol=tol, atol=tol), float((x[fx] - y[fy]).abs().max())


def gen_config(strategy: str = "greedy", n: int = 8, beams: int = 3) -> GenConfig:
    return GenConfig(strategy=strategy, max_new_tokens=n, num_beams=beams if strategy == "beam" else 1)


# ---- beam reorder (methods.md §8.1) ------------------------------------------------------------
Snapshot = Callable[[Any, int], dict[str, torch.Tensor]]  # (stepper, row) → named per-row tensors


class HistoryRecorder(Recorder):
    """Keeps, for every row's token history, the scores and per-row state the beam loop had on it."""

    def __init__(self, inner: Any, snapshot: Snapshot) -> None:
        super().__init__(inner)
        self.snapshot = snapshot
        self.hist: list[tuple[int, ...]] = [()]
        self.snap: dict[tuple[int, ...], dict[str, torch.Tensor]] = {}

    def _keep(self, z: torch.Tensor) -> torch.Tensor:
        for row, h in enumerate(self.hist):
            self.snap[h] = {"z": z[row].clone(), **{k: v.clone() for k, v in self.snapshot(self.inner, row).items()}}
        return super()._keep(z)

    def expand(self, n: int) -> None:
        super().expand(n)
        self.hist = [h for h in self.hist for _ in range(n)]

    def reorder(self, beam_idx: torch.Tensor) -> None:
        super().reorder(beam_idx)
        self.hist = [self.hist[i] for i in beam_idx.tolist()]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.hist = [h + (int(t),) for h, t in zip(self.hist, tokens.tolist())]
        return super().step(tokens)


def check_beam_replay(method: Method, adapter: Any, inputs: Any, gen: GenConfig, snapshot: Snapshot) -> int:
    """Beam-search `method`, then replay every finished hypothesis on one row, teacher-forcing its
    tokens: the replay's last scores and states must be close to what the beam loop used for it.
    Returns the number of hypotheses checked."""
    seeds = SampleSeeds(0, "s0")
    with torch.inference_mode():
        stepper = method.stepper(adapter, inputs, seeds)
        rec = HistoryRecorder(stepper, snapshot)
        with attention.control(adapter, getattr(stepper, "controller", None)):
            res = decode(rec, gen, adapter.eos_token_id)
    assert res.hypotheses
    for hyp in res.hypotheses:
        prefix = tuple(hyp[:-1])  # the scores that chose the last token were computed on this history
        want = rec.snap[prefix]
        with torch.inference_mode():
            replay = method.stepper(adapter, inputs, seeds)
            with attention.control(adapter, getattr(replay, "controller", None)):
                z = replay.prefill()
                for tok in prefix:
                    z = replay.step(torch.tensor([tok]))
        assert_scores_close([z[0]], [want["z"]])
        for name, value in snapshot(replay, 0).items():
            assert torch.allclose(value, want[name], rtol=1e-4, atol=1e-4), name
    return len(res.hypotheses)
