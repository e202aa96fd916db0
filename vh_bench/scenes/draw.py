"""A scene as a record, and its pixels. The same record always gives the same pixels.

Objects sit in the cells of a 3×3 grid (no overlaps, so every object is fully visible) at a size
and an offset that vary; the background is a low-saturation tinted gradient with pixel noise, far
from every class colour in brightness contrast.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from vh_bench.scenes.catalogue import BY_NAME, ObjectClass

GRID = 3
MIN_FRACTION, MAX_FRACTION = 0.5, 0.85  # object size as a fraction of a grid cell


@dataclass(frozen=True)
class Placed:
    """One object: its class, grid cell (row-major), size and offset inside the cell (pixels)."""

    name: str
    cell: int
    size: int
    dx: int
    dy: int


@dataclass(frozen=True)
class Scene:
    image_id: int
    objects: tuple[Placed, ...]
    background: tuple[tuple[int, int, int], tuple[int, int, int]]  # gradient from, to
    gradient_angle: float
    noise_seed: int
    image_size: int

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objects]

    def with_object(self, placed: Placed, image_id: int) -> "Scene":
        """The same scene with one more object (the probe's counterfactual twin)."""
        return Scene(image_id, self.objects + (placed,), self.background, self.gradient_angle, self.noise_seed, self.image_size)


def _mask(shape: str, size: int) -> Image.Image:
    """An 'L' mask of `shape` in a size×size box."""
    m = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(m)
    s = size - 1
    if shape == "circle":
        d.ellipse([0, 0, s, s], fill=255)
    elif shape == "square":
        d.rectangle([s * 0.1, s * 0.1, s * 0.9, s * 0.9], fill=255)
    elif shape == "triangle":
        d.polygon([(0, s), (s / 2, 0), (s, s)], fill=255)
    elif shape == "diamond":
        d.polygon([(s / 2, 0), (s, s / 2), (s / 2, s), (0, s / 2)], fill=255)
    elif shape == "cross":
        w = s * 0.18
        d.rectangle([s / 2 - w, 0, s / 2 + w, s], fill=255)
        d.rectangle([0, s / 2 - w, s, s / 2 + w], fill=255)
    elif shape == "hexagon":
        pts = [(s / 2 + s / 2 * math.cos(math.pi / 3 * k), s / 2 + s / 2 * math.sin(math.pi / 3 * k)) for k in range(6)]
        d.polygon(pts, fill=255)
    elif shape == "ring":
        d.ellipse([0, 0, s, s], fill=255)
        d.ellipse([s * 0.3, s * 0.3, s * 0.7, s * 0.7], fill=0)
    elif shape == "bar":
        d.rectangle([0, s * 0.3, s, s * 0.7], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m


def _texture(cls: ObjectClass, size: int) -> np.ndarray:
    """(size, size, 3) uint8 fill: the class colour, with stripes or dots in a contrasting shade."""
    base = np.array(cls.colour, dtype=np.float32)
    other = np.where(base > 127, base * 0.35, base + (255 - base) * 0.6)
    tex = np.broadcast_to(base, (size, size, 3)).copy()
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // 5)
    if cls.pattern == "stripes":
        on = ((xx + yy) // max(2, period // 2)) % 2 == 1
    elif cls.pattern == "dots":
        c = period / 2
        on = ((xx % period - c) ** 2 + (yy % period - c) ** 2) <= (period * 0.28) ** 2
    else:
        on = np.zeros((size, size), dtype=bool)
    tex[on] = other
    return tex.astype(np.uint8)


def render(scene: Scene) -> Image.Image:
    n = scene.image_size
    rng = np.random.default_rng(scene.noise_seed)
    a, b = (np.array(c, dtype=np.float32) for c in scene.background)
    yy, xx = np.mgrid[0:n, 0:n] / max(1, n - 1)
    t = (np.cos(scene.gradient_angle) * xx + np.sin(scene.gradient_angle) * yy)
    t = (t - t.min()) / max(1e-6, float(t.max() - t.min()))
    img = a + (b - a) * t[..., None]
    img += rng.normal(0.0, 7.0, size=img.shape)
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    cell = n // GRID
    for o in scene.objects:
        cls = BY_NAME[o.name]
        r, c = divmod(o.cell, GRID)
        x, y = c * cell + o.dx, r * cell + o.dy
        tex = Image.fromarray(_texture(cls, o.size), "RGB")
        canvas.paste(tex, (x, y), _mask(cls.shape, o.size))
    return canvas


def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


def patch_labels(scene: Scene, patch: int = 14, min_cover: float = 0.3) -> np.ndarray:
    """(n/patch, n/patch) class index + 1 of the object covering each patch (0: background), the
    vision tower's pre-training target. An object owns a patch when it covers `min_cover` of it."""
    from vh_bench.scenes.catalogue import NAMES

    n = scene.image_size
    cover = np.zeros((len(NAMES) + 1, n, n), dtype=np.float32)
    cell = n // GRID
    for o in scene.objects:
        r, c = divmod(o.cell, GRID)
        x, y = c * cell + o.dx, r * cell + o.dy
        m = np.asarray(_mask(BY_NAME[o.name].shape, o.size), dtype=np.float32) / 255.0
        cover[NAMES.index(o.name) + 1, y : y + o.size, x : x + o.size] = m
    g = n // patch
    per_patch = cover[:, : g * patch, : g * patch].reshape(len(NAMES) + 1, g, patch, g, patch).mean(axis=(2, 4))
    best = per_patch.argmax(axis=0)
    return np.where(per_patch.max(axis=0) >= min_cover, best, 0)
