"""The fused CPU kernel for VASparse's decode-step attention (`methods/kernels/vasparse_decode.cpp`).

`method.kernel` chooses how a decode step's attention runs in the layers VASparse controls:
  * `torch`: the reference path (`methods.vasparse_attention` on the explicit attention path), any
    device and dtype;
  * `cpu`: the fused C++ kernel, float32 on the CPU; an error if it cannot be used or built;
  * `triton`: one Triton kernel per layer (`methods.vasparse_triton`), float32/float16/bfloat16 on
    CUDA (on a CPU only under `TRITON_INTERPRET=1`); an error if it cannot run;
  * `auto` (default): `cpu` on a CPU in float32 where it builds, `triton` on CUDA where Triton
    imports, else `torch` (with a warning where a kernel was expected). The kernel that ran is
    recorded in results.json (`implementation`), so a fallback is never silent.
On a CPU at batch 1 the reference path's ~60 small tensor operations per layer and step cost more in
dispatch than in arithmetic; the kernel does the same computation in one call (see the .cpp header).
Prefill, the `text` scope's scattered candidates and masked batches keep the reference path.

The kernel is compiled on first use by `torch.utils.cpp_extension` (a C++ compiler and ninja are
needed; ~20 s) and cached in `TORCH_EXTENSIONS_DIR` under a name that carries the source hash and
the CPU's vector extension, so a shared cache never hands one machine another's instructions.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from methods.settings import KERNELS

from vh_bench.errors import ConfigError

log = logging.getLogger(__name__)

TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
SOURCE = Path(__file__).with_name("kernels") / "vasparse_decode.cpp"
# Vector extensions per torch CPU capability; FMA contraction stays off (-ffp-contract=off) so every
# elementwise formula rounds as the reference computes it. AVX-512 machines get 256-bit code too:
# the kernel is bound by reading K and V, and a 512-bit build made the whole decode step slower
# (×0.91 vs ×0.93 of vanilla on the bench model, one process, interleaved), as AVX-512 clock
# throttling would.
_ARCH_FLAGS = {
    "AVX512": ["-mavx2", "-mfma"],
    "AVX2": ["-mavx2", "-mfma"],
}


class KernelUnavailable(RuntimeError):
    """The fused kernel cannot be built or loaded here (reason in the message)."""


def _capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # noqa: BLE001 - older torch: no vector flags
        return "DEFAULT"


def _ninja_on_path() -> None:
    """torch runs `ninja` from PATH; a venv used without activation has the pip package's binary
    only in its own bin directory, which the `ninja` module knows."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = os.pathsep.join([ninja.BIN_DIR, os.environ.get("PATH", "")])


@functools.lru_cache(maxsize=1)
def load() -> Any:
    """Build (once per source version and CPU capability) and import the kernel module."""
    _ninja_on_path()
    try:
        from torch.utils.cpp_extension import load as load_extension, verify_ninja_availability

        verify_ninja_availability()
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        raise KernelUnavailable(f"ninja is not available ({exc}); `pip install ninja`") from exc
    cap = _capability()
    flags = ["-O3", "-ffp-contract=off", "-fopenmp-simd", *_ARCH_FLAGS.get(cap, [])]
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode()).hexdigest()[:12]
    name = f"vh_vasparse_decode_{platform.machine()}_{cap.lower()}_{digest}"
    clear_stale_lock(name)
    if is_built(name):
        log.debug("loading the cached VASparse CPU kernel %s", name)
    else:  # said only when a compile really follows (issue 16)
        log.info("building the VASparse CPU kernel %s (first use on this machine, ~20 s)", name)
    try:
        return load_extension(name=name, sources=[str(SOURCE)], extra_cflags=flags, verbose=False)
    except Exception as exc:  # noqa: BLE001 - compiler errors become one reason line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise KernelUnavailable(f"building {SOURCE.name} failed: {first}") from exc


STALE_LOCK_S = 600.0  # a build takes ~20–60 s; a lock this old was left by a killed builder


def clear_stale_lock(name: str, max_age_s: float = STALE_LOCK_S) -> bool:
    """Remove the build lock a killed process left behind; True if one was removed.

    torch's extension builder waits, without limit, for its `lock` file to disappear; a builder
    killed mid-build (Ctrl-C, a test timeout, SIGKILL) leaves it, and every later load of the
    kernel then hangs. Seen here: a lock left at 03:10 hung every VASparse run for an hour.
    """
    try:
        from torch.utils.cpp_extension import _get_build_directory

        lock = Path(_get_build_directory(name, verbose=False)) / "lock"
        if lock.exists() and time.time() - lock.stat().st_mtime > max_age_s:
            log.warning("removing a stale build lock %s (left %.0f s ago by a killed build)", lock,
                        time.time() - lock.stat().st_mtime)
            lock.unlink(missing_ok=True)
            return True
    except Exception:  # noqa: BLE001 - a private helper: never let it break the build
        return False
    return False


def is_built(name: str) -> bool:
    """Whether `torch.utils.cpp_extension` has the compiled library for `name` in its cache.

    Uses torch's own (private) build-directory rule; when torch changes it this answers False and
    the only cost is a "building" line that may be wrong.
    """
    try:
        from torch.utils.cpp_extension import LIB_EXT, _get_build_directory

        return (Path(_get_build_directory(name, verbose=False)) / f"{name}{LIB_EXT}").is_file()
    except Exception:  # noqa: BLE001 - a private helper: never let it break the build
        return False


def supported(device: torch.device | str, dtype: torch.dtype) -> bool:
    return torch.device(device).type == "cpu" and dtype == torch.float32


def resolve(kernel: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """`method.kernel` → the kernel that runs: "cpu", "triton" or "torch"."""
    if kernel not in KERNELS:
        raise ConfigError("method.kernel", f"{kernel!r} is not one of {', '.join(KERNELS)}")
    if kernel == "torch":
        return "torch"
    if kernel == "triton" or (kernel == "auto" and torch.device(device).type == "cuda"):
        return _resolve_triton(kernel, device, dtype)
    if not supported(device, dtype):
        if kernel == "cpu":
            raise ConfigError(
                "method.kernel", f"the cpu kernel runs float32 on the CPU, not {dtype} on {device}", "use auto or torch"
            )
        return "torch"
    try:
        load()
    except KernelUnavailable as exc:
        if kernel == "cpu":
            raise ConfigError("method.kernel", f"the cpu kernel is unavailable: {exc}", "use torch") from exc
        _warn_fallback(str(exc))
        return "torch"
    return "cpu"


def _resolve_triton(kernel: str, device: torch.device | str, dtype: torch.dtype) -> str:
    from methods.vasparse_triton import unavailable_reason

    reason = unavailable_reason(device)
    if reason is None and dtype not in TRITON_DTYPES:
        reason = f"the triton kernel takes float32, float16 or bfloat16, not {dtype}"
    if reason is None:
        return "triton"
    if kernel == "triton":
        raise ConfigError("method.kernel", f"the triton kernel cannot run here: {reason}", "use auto or torch")
    _warn_fallback(reason)
    return "torch"


def load_kernel(resolved: str) -> Any | None:
    """The kernel object a resolved `method.kernel` runs (None for the torch reference path)."""
    if resolved == "cpu":
        return load()
    if resolved == "triton":
        from methods.vasparse_triton import load as load_triton

        return load_triton()
    return None


@functools.lru_cache(maxsize=None)
def _warn_fallback(reason: str) -> None:
    log.warning("VASparse: fused kernel unavailable (%s); using the torch path (method.kernel=torch silences this)", reason)
