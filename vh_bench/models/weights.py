"""Integrity of a shipped checkpoint's weights (`model.sha256`, e.g. model=scenes)."""

from __future__ import annotations

from pathlib import Path

from vh_bench.errors import ConfigError

WEIGHTS_FILE = "model.safetensors"


def check_weights_sha256(path: str, expected: str) -> None:
    """One line naming `model.path` when the weights file is missing or not the recorded one."""
    from vh_bench.store import file_sha256

    f = Path(path) / WEIGHTS_FILE
    if not f.is_file():
        raise ConfigError("model.path", f"{f} is missing", "restore the shipped checkpoint (git checkout) or retrain it")
    got = file_sha256(f)
    if got != expected:
        raise ConfigError(
            "model.path",
            f"{f} has sha256 {got[:12]}…, not the {expected[:12]}… that model.sha256 records (corrupt or replaced)",
            "restore it with git checkout, or set model.sha256 to the new checkpoint's",
        )
