"""Counting what one decode step launches: aten calls at the dispatcher, custom kernels, host syncs.

What is counted (`DispatchCounter`), per phase of a generation (`prefill`, `step`, `select`):
  * kernels: every aten call that reaches a `TorchDispatchMode`, i.e. the calls the eager program
    makes (a composite such as `softmax` or `linear` counts once, as it launches ~one kernel), minus
    - views and other calls whose output aliases an input (`slice`, `transpose`, a `to`/`reshape`/
      `contiguous` that returns its input), which launch nothing;
    - metadata and allocation calls (`empty*`, `detach`, `alias`, `item`, `is_nonzero`, ...);
  * custom kernels: call sites wrapped in `vh_bench.decoding.launches.CustomKernel` (the fused C++
    kernel, Triton launches), one each; the dispatcher is not counted inside them, so what such a
    kernel allocates or (under `TRITON_INTERPRET=1`) the interpreter copies is not counted twice;
  * host syncs: reads of device values by the host, i.e. `item` / `is_nonzero` / `_local_scalar_dense`
    (`.item()`, `int(t)`, `bool(t)`), `Tensor.tolist`, and the data-dependent-shape calls `nonzero`,
    `masked_select`, `unique*`, on a *device-valued* tensor: on CUDA a tensor on the GPU; on a CPU a
    tensor computed (through calls seen here) from the model's weights or the generation's
    activations. Host-built tensors (`torch.arange` of host-known positions) are host data on both.
`step` is everything inside `stepper.step` and `stepper.reorder` (the model's forward for one token
and the method's work around it); `select` is the loop's token selection between steps (the same
code for every method); `prefill` is `stepper.prefill`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakTensorKeyDictionary

from vh_bench.decoding import launches

PHASES = ("prefill", "step", "select")
# Calls that launch no kernel: allocation, metadata, autograd bookkeeping, host reads.
NO_KERNEL = frozenset(
    {
        "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "alias",
        "lift_fresh", "lift_fresh_copy", "set_", "resize_", "sym_size", "sym_stride", "sym_numel",
        "sym_storage_offset", "is_same_size", "result_type", "item", "_local_scalar_dense", "is_nonzero",
        "equal_size", "_has_compatible_shallow_copy_type", "is_coalesced", "record_stream",
    }
)  # fmt: skip
# Calls that may return their input (then nothing is launched) or a copy (one kernel).
MAYBE_ALIAS = frozenset({"to", "contiguous", "reshape", "flatten", "type_as", "view_as", "expand_as", "_to_copy_maybe"})
HOST_READS = frozenset({"item", "_local_scalar_dense", "is_nonzero"})
DATA_DEPENDENT = frozenset({"nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_consecutive", "unique_dim"})


@dataclass
class PhaseCounts:
    calls: int = 0  # calls of this phase (prefill: 1; step: decode steps)
    kernels: int = 0
    custom: int = 0
    syncs: int = 0
    ops: Counter = field(default_factory=Counter)  # kernel-launching call name → count
    sync_ops: Counter = field(default_factory=Counter)
    custom_ops: Counter = field(default_factory=Counter)


def _storage(t: torch.Tensor) -> int | None:
    try:
        return t.untyped_storage().data_ptr()
    except Exception:  # noqa: BLE001 - tensors without storage (meta, sparse) alias nothing here
        return None


class DispatchCounter(TorchDispatchMode):
    """Counts kernels, custom kernels and host syncs per phase (see the module docstring)."""

    def __init__(self, seeds: list[torch.Tensor], device: torch.device) -> None:
        super().__init__()
        self.phase = "prefill"
        self.counts = {p: PhaseCounts() for p in PHASES}
        self.on_cpu = torch.device(device).type == "cpu"
        self._device_valued = WeakTensorKeyDictionary()  # CPU: provenance of device values
        for t in seeds:
            self._device_valued[t] = True
        self._paused = 0
        self._tolist = None

    # -- custom kernels (vh_bench.decoding.launches) -------------------------------------------------
    def custom(self, name: str) -> None:
        if not self._paused:
            c = self.counts[self.phase]
            c.custom += 1
            c.custom_ops[name] += 1

    def pause(self) -> None:
        self._paused += 1

    def resume(self) -> None:
        self._paused -= 1

    # -- host syncs ----------------------------------------------------------------------------------
    def is_device_value(self, t: torch.Tensor) -> bool:
        if not self.on_cpu:
            return t.device.type != "cpu"
        return t in self._device_valued

    def _sync(self, name: str) -> None:
        c = self.counts[self.phase]
        c.syncs += 1
        c.sync_ops[name] += 1

    def __enter__(self) -> "DispatchCounter":
        launches.install(self)
        # `Tensor.tolist` of a CPU tensor reads memory without a dispatcher call: watched here.
        original = torch.Tensor.tolist
        counter = self

        def tolist(t: torch.Tensor) -> Any:
            if not counter._paused and counter.is_device_value(t):
                counter._sync("tolist")
            return original(t)

        self._tolist = original
        torch.Tensor.tolist = tolist  # type: ignore[method-assign]
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            torch.Tensor.tolist = self._tolist  # type: ignore[method-assign]
            launches.uninstall(self)

    # -- the dispatcher ------------------------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's protocol
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._paused:
            return out
        name = func.overloadpacket.__name__
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        device_in = any(self.is_device_value(t) for t in ins)
        if self.on_cpu and device_in:
            for t in outs:
                self._device_valued[t] = True
        c = self.counts[self.phase]
        if device_in and (name in HOST_READS or name in DATA_DEPENDENT):
            self._sync(name)
        elif device_in and not self.on_cpu and name in ("_to_copy", "to", "copy_") and any(t.device.type == "cpu" for t in outs):
            self._sync(f"{name} to the host")
        if name in NO_KERNEL:
            return out
        if getattr(func, "is_view", False) or name in MAYBE_ALIAS:
            inputs = {_storage(t) for t in ins}
            if any(_storage(t) in inputs for t in outs):
                return out  # a view: nothing launched
        c.kernels += 1
        c.ops[name] += 1
        return out


class PhasedStepper:
    """A stepper whose calls switch the counter's phase; anything else is the inner stepper's."""

    def __init__(self, inner: Any, counter: DispatchCounter) -> None:
        self.__dict__["_inner"] = inner
        self.__dict__["_counter"] = counter

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _in(self, phase: str, fn: Any, *args: Any) -> Any:
        counter = self._counter
        counter.phase = phase
        counter.counts[phase].calls += 1
        try:
            return fn(*args)
        finally:
            counter.phase = "select"

    def prefill(self) -> torch.Tensor:
        return self._in("prefill", self._inner.prefill)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._in("step", self._inner.step, tokens)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        counter = self._counter
        counter.phase = "step"  # part of the next step (counted with it, not as a step of its own)
        try:
            self._inner.reorder(beam_idx)
        finally:
            counter.phase = "select"

    def expand(self, n: int) -> None:
        counter = self._counter
        counter.phase = "prefill"
        try:
            self._inner.expand(n)
        finally:
            counter.phase = "select"


class _CountedMethod:
    """`method` whose stepper reports its phases to `counter` (the method object itself untouched)."""

    def __init__(self, method: Any, counter: DispatchCounter) -> None:
        self.method, self.counter = method, counter

    def __enter__(self) -> Any:
        method, counter = self.method, self.counter
        original = method.stepper
        self._original = original
        method.stepper = lambda *a, **kw: PhasedStepper(original(*a, **kw), counter)
        return method

    def __exit__(self, *exc: Any) -> None:
        del self.method.stepper  # back to the class's method


def count_generation(method: Any, adapter: Any, inputs: Any, gen: Any, seeds: Any) -> tuple[DispatchCounter, Any]:
    """One generation under the counter; returns the counter and the `Generation`."""
    model = adapter.model
    tensors = [*model.parameters(), *model.buffers(), inputs.input_ids, inputs.pixel_values]
    counter = DispatchCounter([t for t in tensors if isinstance(t, torch.Tensor)], adapter.device)
    with _CountedMethod(method, counter) as m, counter:
        out = m.generate(adapter, inputs, gen, seeds)
    return counter, out


def cuda_kernels(method: Any, adapter: Any, inputs: Any, gen: Any, seeds: Any) -> dict[str, Any]:
    """CUDA kernels (the profiler's device activities: kernels, memcpy, memset) of one generation."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        out = method.generate(adapter, inputs, gen, seeds)
        torch.cuda.synchronize()
    kinds: Counter = Counter()
    events = prof.events()
    names = [e.name for e in events if getattr(e, "device_type", None) == torch.autograd.DeviceType.CUDA]
    how = "device events"
    if not names:  # profilers that attach device activities to the CPU calls that launched them
        names = [getattr(k, "name", str(k)) for e in events for k in getattr(e, "kernels", [])]
        how = "kernels attached to CPU events"
    for name in names:
        low = name.lower()
        kinds["memcpy" if "memcpy" in low else "memset" if "memset" in low else "kernel"] += 1
    return {"total": sum(kinds.values()), "by_kind": dict(kinds), "n_new_tokens": out.n_new_tokens, "counted_from": how}
