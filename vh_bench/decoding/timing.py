"""Per-sample timers placed as methods.md §1.8 prescribes (three boundary points, CUDA-synced)."""

from __future__ import annotations

import time

import torch


class SampleTimer:
    """Marks (1) before the first model call, (2) after the first token, (3) after the last token."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self._device = torch.device(device)
        self._cuda = self._device.type == "cuda"
        self._t0 = self._t1 = self._t2 = None

    def _now(self) -> float:
        if self._cuda:  # kernels are asynchronous: without this the clock reads queue time
            torch.cuda.synchronize(self._device)  # the run's GPU, not the current one (torchrun ranks)
        return time.perf_counter()

    def start(self) -> None:
        self._t0 = self._now()

    def first_token(self) -> None:
        self._t1 = self._now()

    def stop(self) -> None:
        self._t2 = self._now()

    @property
    def prefill_s(self) -> float:
        return self._t1 - self._t0

    @property
    def decode_s(self) -> float:
        return self._t2 - self._t1
