"""Dynamic-resolution pixel limits (`model.min_pixels` / `model.max_pixels`), checked torch-free.

Qwen2.5-VL's processor resizes each image to an area inside [min_pixels, max_pixels]; the configs
pin both so that runs are comparable. Preflight checks them before torch loads (registry
`Family.option_check`), and the adapter again when it loads.
"""

from __future__ import annotations

from typing import Any

from vh_bench.errors import ConfigError

PIXEL_KEYS = ("min_pixels", "max_pixels")


def check_pixels(options: dict[str, Any]) -> dict[str, int]:
    """`options` (the set pixel keys) as processor options; one line naming the key when bad."""
    out: dict[str, int] = {}
    for key in PIXEL_KEYS:
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"model.{key}", f"{value!r} is not a positive integer (a pixel count)")
        out[key] = int(value)
    if len(out) == 2 and out["min_pixels"] > out["max_pixels"]:
        raise ConfigError("model.min_pixels", f"{out['min_pixels']} exceeds model.max_pixels={out['max_pixels']}")
    return out
