"""HALC's words: where a word starts (§7.2) and whether it names an object (§7.3)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

# methods.md §7.3, as in HALC's code.
EXEMPT_WORDS: tuple[str, ...] = (
    "image", "side", "background", "feature", "features", "center", "left", "right", "scene", "view", "s",
    "Birthday", "detail", "red", "white", "cat", "horse", "bus", "group", "manner", "her", "birds", "teddy",
    "stack", "cell", "toaster", "mirror", "toilet", "captures", "boat", "bench",
)
ADD_WORDS: tuple[str, ...] = (
    "sink", "microwave", "toaster", "puppy", "bottle", "table", "oven", "orange", "toothbrush", "cars",
)
STRIP_CHARS: tuple[str, ...] = (".", ",", "'", "]", "[", ")")
NLTK_NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
SPACY_NOUN_POS = frozenset({"NOUN", "PROPN"})


# ---- word starts ---------------------------------------------------------------------------
def word_start_table(tokenizer, eos_token_id: int, vocab_size: int = 0) -> list[bool]:
    """Per id: does the token start a word? A space marker (SentencePiece's `▁`, LLaVA's Llama
    tokenizer; else byte-level BPE's leading `Ġ`, the space byte, Qwen2.5-VL's), a `.`, or EOS (§7.2).

    A tokenizer without either marker (the word-level test tokenizers) starts a word at every token.
    Ids past the tokenizer (an lm_head padded to `vocab_size`) have no piece: they follow the same
    rule with an empty piece."""
    n = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    pieces = ["" if p is None else str(p) for p in pieces]
    pad = max(0, vocab_size - n)
    if any("▁" in p for p in pieces):
        starts = [("▁" in p) for p in pieces]
    elif any(p.startswith("Ġ") for p in pieces):
        starts = [p.startswith("Ġ") for p in pieces]
    else:
        return [True] * (n + pad)
    table = [s or ("." in p) for s, p in zip(starts, pieces)] + [False] * pad
    if 0 <= eos_token_id < len(table):
        table[eos_token_id] = True
    return table


def last_piece(text: str) -> str:
    """The last space-separated piece (`str.split(" ")[-1]`, as HALC's code)."""
    return text.split(" ")[-1]


# ---- taggers ---------------------------------------------------------------------------------
class Tagger(Protocol):
    name: str

    def is_noun(self, word: str) -> bool:
        """POS of the isolated, non-empty word is a noun (common or proper)."""


class NltkTagger:
    """NLTK's averaged-perceptron English tagger from the project's data root (CHAIR's tagger)."""

    name = "nltk"

    def __init__(self) -> None:
        from vh_bench import nltk_env

        self._tagger = nltk_env.get_tagger()

    def tag(self, word: str) -> str:
        return self._tagger.tag([word])[0][1]

    def is_noun(self, word: str) -> bool:
        return self.tag(word) in NLTK_NOUN_TAGS


class SpacyTagger:
    """HALC's original tagger: spaCy `en_core_web_sm`, first token's POS ∈ {NOUN, PROPN}."""

    name = "spacy"

    def __init__(self, model: str = "en_core_web_sm") -> None:
        import spacy

        self._nlp = spacy.load(model)

    def is_noun(self, word: str) -> bool:
        doc = self._nlp(word)
        return len(doc) > 0 and doc[0].pos_ in SPACY_NOUN_POS


# ---- the object-word test --------------------------------------------------------------------
def normalise_entity(entity: str) -> str:
    """§7.3 steps 1–2: strip `.` `,` `'` `]` `[` `)` in turn from both ends, then drop a final `s`."""
    for ch in STRIP_CHARS:
        entity = entity.strip(ch)
    if entity.endswith("s"):
        entity = entity[:-1]
    return entity


@dataclass(frozen=True)
class WordCheck:
    word: str  # the normalised entity (also the detector query)
    pos: str  # NOUN | OTHER | PUNC | SKIP | ADD
    is_object: bool


def object_test(
    entity: str,
    tagger: Tagger,
    rng: random.Random,
    *,
    skip_rate: float,
    exempt: Sequence[str] = EXEMPT_WORDS,
    add: Sequence[str] = ADD_WORDS,
) -> WordCheck:
    """§7.3 with the code's precedence (ADD over SKIP over the tag). Exactly one `rng` draw per
    call, always made (seeding, §1.7); the tagger runs only when its answer decides the outcome."""
    word = normalise_entity(entity)
    draw = rng.random()
    if word in add:
        pos = "ADD"
    elif "." in word or "," in word or word in exempt or draw < skip_rate:
        pos = "SKIP"
    elif not word:
        pos = "PUNC"
    else:
        pos = "NOUN" if tagger.is_noun(word) else "OTHER"
    return WordCheck(word, pos, pos in ("NOUN", "ADD"))
