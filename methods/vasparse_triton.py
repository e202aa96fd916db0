"""The Triton path of VASparse's decode-step attention: one kernel launch per layer and step.

`method.kernel=triton` (and `auto` on CUDA) runs a decode step's VATS selection with P, DPC-kNN merge
and virtual keys, SAP, the softmax and output, the saliency record and the â redistribution in one
Triton kernel per layer (`methods.vasparse_triton_kernel`), with fp32 arithmetic for float32,
float16 and bfloat16 models. On a CPU it runs only under `TRITON_INTERPRET=1` (the tests and the
launch-count bench), where Triton interprets the same kernel with numpy.

Unlike the fused CPU kernel, this one takes the SAP accumulators as they are (the entries of keys
newer than the accumulator count as 0) and writes c + â into a new buffer, so growing the
accumulator costs no launch (`grows_accumulator`). The saliency row mean over heads is one torch
call at the saliency layer. Host work per call is shape arithmetic only: no value is read back.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch

from vh_bench.decoding.launches import CustomKernel

_LAUNCH = CustomKernel("vasparse_triton")


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unavailable_reason(device: torch.device | str) -> str | None:
    """None when the Triton path can run on `device`, else why not (one line)."""
    dev = torch.device(device)
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        return f"triton is not importable ({type(exc).__name__}: {exc}); `pip install triton`"
    if dev.type == "cuda":
        return None
    if dev.type == "cpu" and interpreting():
        return None
    return f"Triton kernels run on CUDA (or on a CPU under TRITON_INTERPRET=1), not on {dev.type}"


def _pow2(x: int, lo: int = 1) -> int:
    return max(lo, 1 << max(0, math.ceil(math.log2(max(x, 1)))))


@functools.lru_cache(maxsize=1)
def _kernel() -> Any:
    if interpreting():
        import triton.language as tl

        if type(tl.sum).__name__ != "InterpretedFunction":
            raise RuntimeError(
                "TRITON_INTERPRET=1 was set after triton was imported (transformers imports it); "
                "set it in the environment before the process starts"
            )
        _patch_interpreter_once()
    from methods.vasparse_triton_kernel import vasparse_decode_kernel

    return vasparse_decode_kernel


def _patch_interpreter_once() -> None:
    """Triton's interpreter re-patches `triton.language` on every call of a `@triton.jit` helper
    (`tl.sum`, `tl.max`, `tl.cumsum`, ... are such helpers): ~25 ms each on this machine, most of an
    interpreted launch. Those nested patches are never undone by Triton itself, so repeating them
    changes nothing: after the first, nested calls skip it. Interpreter only; a Triton without these
    internals is left alone (slower, same results)."""
    try:
        import inspect

        import triton.language as tl
        from triton.runtime import interpreter as itp

        original, call = itp._patch_lang, itp.InterpretedFunction.__call__
    except Exception:  # noqa: BLE001 - another Triton layout: nothing to speed up
        return
    if getattr(call, "_vh_bench_patched", False):
        return
    seen: set[frozenset[int]] = set()

    def patch_once(fn: Any) -> Any:
        key = frozenset(id(v) for v in fn.__globals__.values() if inspect.ismodule(v) and v in (tl, tl.core))
        if key in seen:
            return None
        seen.add(key)
        return original(fn)

    def nested_call(self: Any, *args: Any, **kwargs: Any) -> Any:
        itp._patch_lang = patch_once
        try:
            return call(self, *args, **kwargs)
        finally:
            itp._patch_lang = original

    nested_call._vh_bench_patched = True  # type: ignore[attr-defined]
    itp.InterpretedFunction.__call__ = nested_call


class TritonDecode:
    """Drop-in for the fused CPU kernel module's `decode` (same arguments and results)."""

    grows_accumulator = True
    name = "triton"

    def decode(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scaling: float, acc: torch.Tensor | None,
        beta: float, term: torch.Tensor | None, start: int, n_cand: int, n_drop: int, n_clusters: int,
        knn_k: int, normalize_sum: bool, merge: bool, image_start: int, n_image: int, trace: bool, record: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
        """q (R, H, 1, d); k, v (R, H_kv, N, d) with unit stride in d; acc (R, H, N_acc ≤ N)
        contiguous fp32 or None (no SAP); term (R, n) fp32 or None (λ = 0).

        Returns (out (R, 1, H, d) in q's dtype, saliency (R,) or None, â (R, H, N), dropped
        (R, H, m), w_max (R, H) or None, c + â (R, H, N) or None)."""
        R, H, _, d = q.shape
        N, H_kv = k.shape[2], k.shape[1]
        if q.stride(3) != 1 or k.stride(3) != 1 or v.stride(3) != 1:
            raise ValueError("query, key and value need unit stride in the last dimension")
        if not (0 <= start and start + n_cand <= N - 1 and 0 <= n_drop <= n_cand and H % H_kv == 0):
            raise ValueError("bad VATS candidates or head counts")
        vats = n_drop > 0
        do_merge = vats and merge
        if do_merge and not 1 <= n_clusters <= n_drop:
            raise ValueError("bad cluster count")
        sap = acc is not None
        dev = q.device
        f32 = torch.float32
        out = torch.empty(R, 1, H, d, dtype=q.dtype, device=dev)
        a_hat = torch.empty(R, H, N, dtype=f32, device=dev)
        dropped = torch.empty(R, H, n_drop, dtype=torch.long, device=dev)
        scratch = torch.empty(R, H, max(n_drop, 1), dtype=f32, device=dev)
        acc_out = torch.empty(R, H, N, dtype=f32, device=dev) if sap else None
        image = torch.empty(R, H, dtype=f32, device=dev) if n_image > 0 else None
        w_max = torch.empty(R, H, dtype=f32, device=dev) if sap and record else None
        if sap and (acc.dtype != f32 or not acc.is_contiguous() or acc.shape[:2] != (R, H) or acc.shape[2] > N):
            raise ValueError("accumulator must be contiguous fp32 (rows, heads, ≤ keys)")
        has_term = term is not None and vats
        if has_term and (term.dtype != f32 or not term.is_contiguous() or tuple(term.shape) != (R, n_cand)):
            raise ValueError("saliency term must be contiguous fp32 (rows, candidates)")
        block_n = _pow2(N, 16)
        block_m = _pow2(n_drop, 16)
        block_c = _pow2(n_clusters if do_merge else 1, 2)
        block_d = max(16, min(_pow2(d), 8192 // block_n))
        dc = max(1, min(16, 8192 // (block_m * block_m)))
        rc = min(block_n, max(1, 8192 // block_n))
        keys = torch.empty(R * H, block_n, dtype=torch.long, device=dev) if vats else a_hat
        dummy = a_hat  # never read when its flag is off
        with _LAUNCH:
            if self.stand_in is not None:
                self._stand_in(q, k, v, scaling, acc, beta, term if has_term else None, start, n_cand, n_drop,
                               n_clusters, knn_k, normalize_sum, merge, image_start, n_image, record,
                               out, a_hat, dropped, acc_out, image, w_max)  # fmt: skip
                return self._finish(out, image, a_hat, dropped, w_max, acc_out)
            _kernel()[(R * H,)](
                q, k, v, acc if sap else dummy, acc_out if sap else dummy, term if has_term else dummy,
                out, a_hat, dropped if vats else dummy, scratch, keys, image if image is not None else dummy,
                w_max if w_max is not None else dummy,
                q.stride(0), q.stride(1), k.stride(0), k.stride(1), k.stride(2), v.stride(0), v.stride(1), v.stride(2),
                H, H // H_kv, N, acc.shape[2] if sap else 0,
                float(scaling), float(beta), float(1.0 + beta), float(math.sqrt(d)),
                start, n_cand, n_drop, n_clusters if do_merge else 0, knn_k, image_start, n_image, D=d, KNN=knn_k,
                BLOCK_N=block_n, BLOCK_D=block_d, BLOCK_M=block_m, BLOCK_C=block_c, DC=dc, RC=rc,
                VATS=vats, MERGE=do_merge, NORM_SUM=bool(normalize_sum), HAS_TERM=has_term, SAP=sap,
                SALIENCY=n_image > 0, RECORD=w_max is not None,
                num_warps=4 if block_n <= 256 else 8,
            )  # fmt: skip
        return self._finish(out, image, a_hat, dropped, w_max, acc_out)

    @staticmethod
    def _finish(out, image, a_hat, dropped, w_max, acc_out):  # noqa: ANN001, ANN205 - decode's results
        saliency = image.mean(dim=1) if image is not None else None  # mean_h Σ_{k∈I} â_k
        return out, saliency, a_hat, dropped, w_max, acc_out

    # -- launch counting without the interpreter ------------------------------------------------------
    stand_in: Any | None = None

    def _stand_in(self, q, k, v, scaling, acc, beta, term, start, n_cand, n_drop, n_clusters, knn_k,
                  normalize_sum, merge, image_start, n_image, record, out, a_hat, dropped, acc_out, image, w_max):  # noqa: ANN001
        """The launch's results from the fused CPU kernel (the same computation, held equal to the
        reference like this one): the launch-count bench on a CPU counts this path's calls outside
        the launch exactly, without interpreting ~R·H·layers programs per step."""
        from methods.vasparse_sap import grow

        grown = grow(acc, k.shape[2]).contiguous().clone() if acc is not None else None
        o, sal, ah, dr, wm = self.stand_in.decode(
            q, k, v, scaling, grown, beta, term, start, n_cand, n_drop, n_clusters, knn_k, normalize_sum,
            merge, image_start, n_image, True, record and grown is not None,
        )  # fmt: skip
        out.copy_(o)
        a_hat.copy_(ah)
        dropped.copy_(dr)
        if acc_out is not None:
            acc_out.copy_(grown)
        if image is not None:
            image.copy_(sal[:, None].expand_as(image))  # per-head sums whose mean is the saliency
        if w_max is not None:
            w_max.copy_(wm)


def use_stand_in(kernel: Any | None) -> None:
    """Launch-count bench only: compute the launches' results with `kernel` (the fused CPU kernel
    module) instead of running Triton; None restores the real launches."""
    load().stand_in = kernel


@functools.lru_cache(maxsize=1)
def load() -> TritonDecode:
    return TritonDecode()
