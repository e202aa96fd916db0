"""Checks of `runtime.*` and of the config names that become run-directory parts.

All of them run in `runner.plan`, before any model is loaded, and fail as one `ConfigError` line
naming the key: a value of the wrong type must not surface later as a traceback, and a name must
never place a run directory outside `paths.results_dir`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vh_bench.errors import ConfigError, is_int

# One path component: letters, digits and . _ + - (no separator, no leading dot, so neither `..`
# nor a hidden file), at most 128 characters. Model and dataset names are written this way by
# every config shipped; anything else is a typo or an attempt to write elsewhere.
_PATH_PART = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}")

DEVICE = re.compile(r"auto|cpu|mps|cuda(:[0-9]+)?")


def check_path_part(key: str, value: Any) -> str:
    """`value` as a single safe directory name, or a ConfigError naming `key`."""
    if not isinstance(value, str) or not _PATH_PART.fullmatch(value):
        raise ConfigError(
            key,
            f"{value!r} cannot name a run directory",
            "use letters, digits and . _ + - only (no /, no leading dot), e.g. llava-1.5-7b",
        )
    return value


def check_inside(path: Path, root: Path, key: str) -> None:
    """Refuse a run directory that is not below `paths.results_dir` (belt and braces after the
    name checks: nothing a run writes may land outside it)."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise ConfigError(key, f"run directory {path} would be outside paths.results_dir {root}")


def _int_at_least(key: str, value: Any, low: int, *, optional: bool, hint: str = "") -> None:
    if value is None and optional:
        return
    if not is_int(value) or value < low:
        what = f"an integer >= {low}" + (" or null" if optional else "")
        raise ConfigError(f"runtime.{key}", f"must be {what}, got {value!r}", hint)


def check_runtime(runtime: DictConfig) -> None:
    """Types and ranges of `runtime.*` (dtype and the method-specific checks live elsewhere)."""
    _int_at_least("limit", runtime.limit, 1, optional=True, hint="the number of samples to evaluate")
    if not is_int(runtime.seed):  # any integer: it is hashed into the per-sample seeds (§1.7)
        raise ConfigError("runtime.seed", f"must be an integer, got {runtime.seed!r}")
    _int_at_least("warmup_samples", runtime.warmup_samples, 0, optional=False)
    _int_at_least("num_threads", runtime.num_threads, 1, optional=True, hint="torch CPU threads; null: torch's default")
    _int_at_least("shard.index", runtime.shard.index, 0, optional=True)
    _int_at_least("shard.count", runtime.shard.count, 1, optional=True)
    device = runtime.device
    if not isinstance(device, str) or not DEVICE.fullmatch(device):
        raise ConfigError("runtime.device", f"{device!r} is not a device", "auto, cpu, cuda or cuda:N")
    for key in ("progress", "scoring_worker"):
        if not isinstance(runtime.get(key), bool):
            raise ConfigError(f"runtime.{key}", f"must be true or false, got {runtime.get(key)!r}")
