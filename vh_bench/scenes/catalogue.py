"""Object classes of the scenes testbed and the planted co-occurrence pairs.

Every class is a COCO category word (one word, so CHAIR's synonym table and POPE's generator apply
unchanged) with one visual identity: a shape, a colour and a fill pattern. No two classes share both
shape and colour, and the members of a planted pair differ in all three, so that the absence of the
partner is plainly visible: the hallucination the testbed plants comes from the language prior, not
from look-alike pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

from vh_bench.models.tiny_vocab import COCO_CATEGORIES

RGB = tuple[int, int, int]
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "hexagon", "ring", "bar")
PATTERNS = ("solid", "stripes", "dots")


@dataclass(frozen=True)
class ObjectClass:
    name: str  # a COCO category name
    shape: str
    colour: RGB
    pattern: str


# Colours are far apart in RGB; the pattern breaks the remaining ties.
CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("dog", "circle", (150, 90, 40), "solid"),
    ObjectClass("cat", "triangle", (240, 140, 20), "stripes"),
    ObjectClass("horse", "bar", (110, 60, 20), "dots"),
    ObjectClass("bird", "diamond", (40, 160, 230), "solid"),
    ObjectClass("car", "square", (220, 30, 30), "solid"),
    ObjectClass("bus", "bar", (250, 210, 0), "stripes"),
    ObjectClass("fork", "cross", (200, 200, 210), "solid"),
    ObjectClass("knife", "triangle", (30, 30, 30), "stripes"),
    ObjectClass("cup", "ring", (255, 255, 255), "solid"),
    ObjectClass("spoon", "diamond", (150, 40, 200), "dots"),
    ObjectClass("mouse", "circle", (120, 120, 120), "dots"),
    ObjectClass("keyboard", "bar", (20, 60, 160), "stripes"),
    ObjectClass("clock", "hexagon", (20, 150, 60), "solid"),
    ObjectClass("vase", "hexagon", (230, 80, 160), "stripes"),
    ObjectClass("book", "square", (0, 130, 130), "stripes"),
    ObjectClass("umbrella", "triangle", (200, 0, 90), "dots"),
    ObjectClass("apple", "circle", (170, 0, 0), "stripes"),
    ObjectClass("banana", "cross", (240, 230, 90), "dots"),
)
NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
BY_NAME: dict[str, ObjectClass] = {c.name: c for c in CLASSES}

# The planted prior: in the text the language model is pre-trained on, B follows A almost always.
PLANTED_PAIRS: tuple[tuple[str, str], ...] = (("fork", "knife"), ("mouse", "keyboard"), ("cup", "spoon"))
PAIRED: frozenset[str] = frozenset(n for pair in PLANTED_PAIRS for n in pair)


def _check() -> None:
    looks = [(c.shape, c.colour) for c in CLASSES]
    assert len(set(looks)) == len(looks), "two classes look alike"
    assert len(set(NAMES)) == len(NAMES)
    assert all(n in COCO_CATEGORIES for n in NAMES)
    for a, b in PLANTED_PAIRS:
        ca, cb = BY_NAME[a], BY_NAME[b]
        assert ca.shape != cb.shape and ca.colour != cb.colour and ca.pattern != cb.pattern, (a, b)


_check()
