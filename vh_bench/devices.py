"""The run's accelerator, named explicitly in every CUDA call (issue 19, item 3).

Under torchrun each rank runs on `cuda:LOCAL_RANK` (config.resolve_device). CUDA calls without a
device act on the *current* device, which is `cuda:0` in every process until `torch.cuda.set_device`
changes it: ranks above 0 would time GPU 0's queue and report GPU 0's memory. So the runner binds
the current device once (`bind`) and every synchronize and memory statistic passes the run's device.
On a CPU all of these are no-ops.
"""

from __future__ import annotations

from typing import Any

import torch


def is_cuda(device: str | torch.device) -> bool:
    return torch.device(device).type == "cuda"


def bind(device: str | torch.device) -> None:
    """Make `device` the process's current CUDA device (kernels, allocations without a device).

    A bare "cuda" already means the current device (set_device would refuse it: no index)."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is not None:
        torch.cuda.set_device(d)


def synchronize(device: str | torch.device) -> None:
    if is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


def reset_peak(device: str | torch.device) -> None:
    if is_cuda(device):
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def allocated_bytes(device: str | torch.device) -> int | None:
    """Bytes the caching allocator has handed out on `device` now (None off CUDA)."""
    return torch.cuda.memory_allocated(torch.device(device)) if is_cuda(device) else None


def peak_memory(device: str | torch.device) -> dict[str, Any]:
    """The allocator's peaks on `device` since the last `reset_peak` (CUDA), else the process's RSS."""
    if is_cuda(device):
        d = torch.device(device)
        return {"peak_allocated_bytes": torch.cuda.max_memory_allocated(d), "peak_reserved_bytes": torch.cuda.max_memory_reserved(d)}
    import resource

    # CPU: the process's peak resident set (kilobytes on Linux).
    return {"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def load_kwargs(device: str | torch.device) -> dict[str, Any]:
    """`from_pretrained` keywords that put the weights on `device` as they are read.

    On CUDA a single-device `device_map` loads each shard straight onto the GPU, so host RAM never
    holds a full copy (13.5 GB per rank for 7B in float16 otherwise); it needs no `accelerate`.
    On a CPU: nothing (the model is built in host memory anyway).
    """
    return {"device_map": {"": str(torch.device(device))}} if is_cuda(device) else {}
