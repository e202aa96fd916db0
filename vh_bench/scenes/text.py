"""Caption grammar and training questions of the scenes testbed.

Captions list every object once: "A picture of a fork , a knife and a cup ." When both members of a
planted pair are present, the partner B always comes right after A, so the language prior has one
place to act: the object slot after "A , a" (or "A and a").
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from vh_bench.scenes.catalogue import PLANTED_PAIRS

CAPTION_PROMPT = "Please describe this image in detail."
# POPE's question and the `llava` suffix (metrics.md §3.2), as the harness will ask them.
POPE_SUFFIX = "\nAnswer the question using a single word or phrase."
ANSWERS = ("Yes", "No")

# Words the scenes tokenizer needs beyond the object names: the grammar, both prompts, the
# templates' words (the `hf` template is the testbed's), and sentence starters.
GRAMMAR_WORDS = ("A", "picture", "of", "a", "and", ",", ".", "Is", "there", "in", "the", "image", "?")


def caption_order(names: Sequence[str], rng: random.Random) -> list[str]:
    """A random order of `names` in which each present partner B directly follows its A."""
    present = set(names)
    units: list[list[str]] = []
    used: set[str] = set()
    for a, b in PLANTED_PAIRS:
        if a in present and b in present:
            units.append([a, b])
            used.update((a, b))
    units.extend([n] for n in names if n not in used)
    rng.shuffle(units)
    return [n for unit in units for n in unit]


def caption(ordered: Sequence[str]) -> str:
    items = [f"a {n}" for n in ordered]
    if len(items) == 1:
        listing = items[0]
    else:
        listing = " , ".join(items[:-1]) + " and " + items[-1]
    return f"A picture of {listing} ."


def caption_prefix(ordered: Sequence[str], upto: int) -> str:
    """The caption of `ordered` cut just before the object word at index `upto` ("... , a")."""
    n = len(ordered)
    parts = [f"A picture of a {ordered[0]}"]
    for i in range(1, upto + 1):
        sep = " and" if i == n - 1 else " ,"
        parts.append(f"{sep} a" if i == upto else f"{sep} a {ordered[i]}")
    return "".join(parts) if upto > 0 else "A picture of a"


def question(name: str) -> str:
    return f"Is there a {name} in the image?" + POPE_SUFFIX
