"""Image loading with per-sample errors: a bad file is recorded on its line, the run goes on."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, UnidentifiedImageError

RGB = tuple[int, int, int]
Box = tuple[int, int, int, int]

from vh_bench.errors import SampleError


def two_shapes(size: tuple[int, int], background: RGB, rectangle: Box, ellipse: Box,
               colours: tuple[RGB, RGB] = ((220, 30, 30), (250, 220, 40))) -> Image.Image:
    """A synthetic scene, a rectangle and an ellipse on a plain background (benches, tests)."""
    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    draw.rectangle(rectangle, fill=colours[0])
    draw.ellipse(ellipse, fill=colours[1])
    return img


def load_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()  # force decoding now: truncated files fail here, not inside the model call
            return img.convert("RGB")
    except FileNotFoundError:
        raise SampleError(f"image file missing: {path}") from None
    except Image.DecompressionBombError as exc:
        # Not an OSError: PIL refuses images over 2 x Image.MAX_IMAGE_PIXELS before decoding them.
        raise SampleError(f"image too large to decode {path}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        # ValueError / EOFError: some truncated or malformed files fail this way inside PIL plugins.
        raise SampleError(f"corrupt or unreadable image {path}: {exc}") from None
