"""Peak memory of one method's generations, measured per method inside one process.

CUDA: the caching allocator's own statistics (`reset_peak_memory_stats`, `max_memory_allocated`),
exact per method because the peak is reset before each method (metrics.md §5).

CPU: torch keeps no allocation statistics, `tracemalloc` does not see torch's allocations, and the
process RSS only ever grows (glibc keeps freed memory; a method measured after a hungrier one would
inherit its peak). Instead we ask torch's CPU allocator itself: with `profile_memory=True` the
profiler records every allocation and free made through c10's CPU allocator (all tensor storage:
activations, KV caches, logits, masks) as `[memory]` events with signed byte counts. The running sum
of those events in time order is the bytes allocated since the window opened and still live; its
maximum is the method's peak working memory. Resident bytes allocated before the window (LLaVA's
weights and buffers, the prepared inputs, and the modules the method itself holds, e.g. HALC's
detector and scorer) are added to give a figure comparable to CUDA's `max_memory_allocated`.

Not counted on CPU: memory that bypasses torch's allocator (MKL/oneDNN internal scratch, Python
objects) and allocations on intra-op worker threads (the profiler's memory reporting is per
thread; torch allocates op outputs on the calling thread). Profiling slows execution, so memory is
measured in its own pass, never during the timed repetitions.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch

log = logging.getLogger(__name__)

MEMORY_EVENT = "[memory]"
CPU_METHOD = "torch CPU allocator events (torch.profiler profile_memory=True): peak of live bytes allocated during generation + resident weights/inputs"
CUDA_METHOD = "torch.cuda.max_memory_allocated after reset_peak_memory_stats (includes weights and inputs)"


@dataclass(frozen=True)
class MemoryPeak:
    peak_bytes: int  # resident + peak working: what the method needed in total
    working_bytes: int  # peak of bytes allocated during generation and live at once
    resident_bytes: int  # weights, buffers and inputs present before generation
    how: str


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of distinct storages (tied weights counted once)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t.device.type == "meta":
            continue
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def module_bytes(module: torch.nn.Module) -> int:
    return tensor_bytes([*module.parameters(), *module.buffers()])


def reachable_modules(obj: Any, depth: int = 3) -> list[torch.nn.Module]:
    """nn.Modules held by `obj` (a method): attributes, containers, up to `depth` levels down.

    A method's own weights (HALC's detector and BLIP scorer, loaded once per method object) are
    resident memory of that method, like the LLaVA weights are of every method.
    """
    found: dict[int, torch.nn.Module] = {}
    seen: set[int] = set()

    def visit(x: Any, d: int) -> None:
        if id(x) in seen or d < 0 or isinstance(x, (str, bytes, int, float, bool, type(None), torch.Tensor)):
            return
        seen.add(id(x))
        if isinstance(x, torch.nn.Module):
            found[id(x)] = x
            return
        if isinstance(x, dict):
            children: Iterable[Any] = x.values()
        elif isinstance(x, (list, tuple, set, frozenset)):
            children = x
        elif hasattr(x, "__dict__"):
            children = vars(x).values()
        else:
            return
        for child in children:
            visit(child, d - 1)

    visit(obj, depth)
    return list(found.values())


def peak_from_events(deltas: Iterable[tuple[int, int]]) -> int:
    """Peak of the running sum of (time_ns, signed bytes) allocation events, taken in time order.

    An allocation and a free with the same timestamp are applied allocation first, so the peak is
    never underestimated by ordering ties.
    """
    run = peak = 0
    for _, nbytes in sorted(deltas, key=lambda e: (e[0], -e[1])):
        run += nbytes
        peak = max(peak, run)
    return peak


@contextmanager
def _stderr_muted() -> Iterator[None]:
    """Silence file descriptor 2: Kineto's C++ side prints start/stop lines there on every profile."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_working_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes of torch CPU allocations made by `fn()` and live at the same time."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False)
    with _stderr_muted():
        prof.start()
    try:
        fn()
    finally:
        with _stderr_muted():
            prof.stop()
    events = [
        (e.start_ns(), int(e.nbytes()))
        for e in prof.profiler.kineto_results.events()  # type: ignore[union-attr]
        if e.name() == MEMORY_EVENT and e.device_type() == torch.autograd.DeviceType.CPU
    ]
    return peak_from_events(events)


def measure_peak(fn: Callable[[], Any], device: torch.device, resident_bytes: int) -> MemoryPeak:
    """Run `fn()` once and return its peak; `resident_bytes` is what is allocated before (CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return MemoryPeak(peak, peak - before, before, CUDA_METHOD)
    working = cpu_working_peak(fn)
    return MemoryPeak(resident_bytes + working, working, resident_bytes, CPU_METHOD)
