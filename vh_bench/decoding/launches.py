"""Custom-kernel call sites, made visible to the launch-count bench (`vh_bench.bench.launches`).

A fused kernel called through pybind11 or a Triton launch is invisible to the torch dispatcher, and
the allocations and copies it makes internally (or, under `TRITON_INTERPRET=1`, the interpreter's
own tensor traffic) are not kernels of the method. A call site wraps the launch in
`with CustomKernel("name"):`: while a launch counter is installed this records one custom kernel
and pauses the counter's dispatcher count for the duration of the call; otherwise it costs one
attribute read.
"""

from __future__ import annotations

from typing import Any, Protocol


class LaunchCounter(Protocol):
    def custom(self, name: str) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...


_ACTIVE: list[LaunchCounter] = []  # the installed counters, innermost last


def install(counter: LaunchCounter) -> None:
    _ACTIVE.append(counter)


def uninstall(counter: LaunchCounter) -> None:
    if counter in _ACTIVE:
        _ACTIVE.remove(counter)


class CustomKernel:
    """`with CustomKernel("vasparse_cpu"): kernel.decode(...)` (reusable, not re-entrant per counter)."""

    __slots__ = ("name", "_counter")

    def __init__(self, name: str) -> None:
        self.name = name
        self._counter: LaunchCounter | None = None

    def __enter__(self) -> "CustomKernel":
        if _ACTIVE:
            self._counter = _ACTIVE[-1]
            self._counter.custom(self.name)
            self._counter.pause()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._counter is not None:
            self._counter.resume()
            self._counter = None
