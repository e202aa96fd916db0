"""Image loading with per-sample errors: a bad file is recorded on its line, the run goes on."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from vh_bench.errors import SampleError


def load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now: truncated files fail here, not inside the model call
            return img.convert("RGB")
    except FileNotFoundError:
        raise SampleError(f"image file missing: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SampleError(f"corrupt or unreadable image {path}: {exc}") from None
