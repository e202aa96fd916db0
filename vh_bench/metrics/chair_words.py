"""CHAIR text processing: synonym table, normalisers, double words, `caption_to_words` (metrics.md §1.4).

Two dialects (§1.2): `opera` = NLTK POS tagger + WordNet lemmatizer, `original` = PatternLite's
`singularize`. Both tokenise with `nltk.word_tokenize`. Every quirk of the reference (broken synonym
entries, greedy double-word merge, the toilet-seat rule) is kept on purpose: it is what the
published numbers were computed with.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from vh_bench.paths import shared_dir

DIALECTS = ("opera", "original")

# §1.4 step 4: the 55 double words. Keys whose value is the key itself:
_SELF_DOUBLE_WORDS = (
    "motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
    "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball",
    "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone",
    "mobile phone", "teddy bear", "hair drier", "potted plant", "laptop computer", "stove top oven",
    "home plate", "train track",
)
_ANIMAL_WORDS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
                 "giraffe", "animal", "cub")


def _double_words() -> dict[str, str]:
    table = {w: w for w in _SELF_DOUBLE_WORDS}
    table["bow tie"] = "tie"
    for animal in _ANIMAL_WORDS:  # "baby/adult X" must not fire as person (baby, adult)
        table[f"baby {animal}"] = animal
        table[f"adult {animal}"] = animal
    for vehicle in ("jet", "train"):  # nor "passenger X"
        table[f"passenger {vehicle}"] = vehicle
    table["toilet seat"] = "toilet"
    table["wine glas"] = "wine glass"  # repairs pattern's glass -> glas
    return table


DOUBLE_WORDS: dict[str, str] = _double_words()


# ---------------------------------------------------------------------------------------------
# Step 0: synonym table


def default_synonyms_path() -> Path:
    return shared_dir() / "data" / "chair" / "synonyms.txt"


@dataclass(frozen=True)
class SynonymTable:
    """§1.4 step 0. `node_of[piece]` is the COCO category of every piece; `nodes` in COCO order."""

    nodes: tuple[str, ...]
    pieces: tuple[str, ...]  # every piece in file order, duplicates included (416)
    node_of: dict[str, str]
    path: str
    sha256: str

    @property
    def vocabulary(self) -> frozenset[str]:
        return frozenset(self.node_of)


@lru_cache(maxsize=8)
def _load_synonyms_cached(path: str, mtime_ns: int, size: int) -> SynonymTable:
    raw = Path(path).read_bytes()
    nodes: list[str] = []
    pieces: list[str] = []
    node_of: dict[str, str] = {}
    for line in raw.decode("utf-8").splitlines():
        # Strip the line but NOT the pieces: " motor bike" keeps its space (reference quirk).
        parts = line.strip().split(", ")
        if parts == [""]:
            continue
        nodes.append(parts[0])
        for piece in parts:
            prev = node_of.setdefault(piece, parts[0])
            if prev != parts[0]:
                raise ValueError(f"synonyms file {path}: {piece!r} maps to both {prev!r} and {parts[0]!r}")
            pieces.append(piece)
    return SynonymTable(tuple(nodes), tuple(pieces), node_of, path, hashlib.sha256(raw).hexdigest())


def load_synonyms(path: os.PathLike | str | None = None) -> SynonymTable:
    """Read the synonym table (cached per file version)."""
    p = Path(path) if path is not None else default_synonyms_path()
    try:
        st = p.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"CHAIR synonyms file not found: {p}") from None
    return _load_synonyms_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


# ---------------------------------------------------------------------------------------------
# Step 3: token normalisers. Both are pure functions of the token (and tag), so memoised.


class _OperaNormaliser:
    """§1.4 step 3a: tag the whole token list in one call, then lemmatize with the mapped POS."""

    def __init__(self) -> None:
        from nltk.stem import WordNetLemmatizer

        from vh_bench.nltk_env import get_tagger

        self._tagger = get_tagger()
        self._lemmatize = WordNetLemmatizer().lemmatize
        self._memo: dict[tuple[str, str], str] = {}

    # Penn tag's first letter: J->a, V->v, N->n, R->r (RP included); anything else -> noun.
    _POS = {"J": "a", "V": "v", "N": "n", "R": "r"}

    @classmethod
    def wordnet_pos(cls, tag: str) -> str:
        return cls._POS.get(tag[:1], "n")

    def __call__(self, tokens: list[str]) -> list[str]:
        if not tokens:
            return []
        memo = self._memo
        out = []
        for token, tag in self._tagger.tag(tokens):
            key = (token, self.wordnet_pos(tag))
            lemma = memo.get(key)
            if lemma is None:
                lemma = memo[key] = self._lemmatize(*key)
            out.append(lemma)
        return out


def _load_pattern_inflect() -> ModuleType:
    # §1.3: never `import pattern.en` (its __init__ calls nltk.download('wordnet')); load the one
    # file inflect.py, which only imports pattern, pattern.text, pattern.helpers, pattern.text.tree.
    spec = importlib.util.find_spec("pattern")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("CHAIR original dialect needs PatternLite: pip install --no-deps PatternLite==3.6")
    path = Path(next(iter(spec.submodule_search_locations))) / "text" / "en" / "inflect.py"
    file_spec = importlib.util.spec_from_file_location("vh_bench._pattern_inflect", path)
    if file_spec is None or file_spec.loader is None:
        raise ModuleNotFoundError(f"PatternLite is installed but {path} cannot be loaded")
    module = importlib.util.module_from_spec(file_spec)
    file_spec.loader.exec_module(module)
    return module


class _OriginalNormaliser:
    """§1.4 step 3b: PatternLite `singularize(token)` with default arguments, no POS tags."""

    def __init__(self) -> None:
        self._singularize: Callable[[str], str] = _load_pattern_inflect().singularize
        self._memo: dict[str, str] = {}

    def __call__(self, tokens: list[str]) -> list[str]:
        memo = self._memo
        out = []
        for token in tokens:
            s = memo.get(token)
            if s is None:
                s = memo[token] = self._singularize(token)
            out.append(s)
        return out


_normalisers: dict[str, Callable[[list[str]], list[str]]] = {}
_norm_lock = threading.Lock()


def check_dialect(dialect: str) -> str:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown CHAIR dialect {dialect!r} (choose one of: {', '.join(DIALECTS)})")
    return dialect


def normaliser(dialect: str) -> Callable[[list[str]], list[str]]:
    """The (cached) token normaliser of a dialect; the opera one runs the NLTK start-up checks."""
    check_dialect(dialect)
    with _norm_lock:
        if dialect not in _normalisers:
            _normalisers[dialect] = _OperaNormaliser() if dialect == "opera" else _OriginalNormaliser()
        return _normalisers[dialect]


def singularizer_version() -> str:
    """`patternlite-<version>`, recorded with every original-dialect result (§1.2)."""
    try:
        return f"patternlite-{importlib.metadata.version('PatternLite')}"
    except importlib.metadata.PackageNotFoundError:
        return "patternlite-unknown"


def singularize(word: str) -> str:
    """PatternLite's `singularize` (the original dialect's normaliser) for one word."""
    return normaliser("original")([word])[0]


_tokenizer_ready = False


def _tokenize(text: str) -> list[str]:
    from nltk.tokenize import word_tokenize

    global _tokenizer_ready
    if not _tokenizer_ready:  # once per process: NLTK caches the Punkt model after the first call
        from vh_bench.nltk_env import ensure_active

        ensure_active(full=False)  # the opera normaliser runs the full checks when it is built
        _tokenizer_ready = True
    return word_tokenize(text)


# ---------------------------------------------------------------------------------------------
# Steps 1-6


@dataclass(frozen=True)
class CaptionWords:
    """Result of §1.4: vocabulary matches, their COCO nodes, the merged token list, start positions."""

    words: tuple[str, ...]
    node_words: tuple[str, ...]
    merged: tuple[str, ...]
    positions: tuple[int, ...]


@lru_cache(maxsize=4096)
def normalise_caption(caption: str, dialect: str = "opera") -> tuple[str, ...]:
    """§1.4 steps 1-3: lower-case, tokenise, normalise. Memoised: the same captions are scored
    against several GT caches, and COCO's reference captions repeat."""
    return tuple(normaliser(dialect)(_tokenize(caption.lower())))


def merge_double_words(norm: Sequence[str]) -> tuple[list[str], list[int]]:
    """§1.4 step 4: greedy left-to-right merge; returns merged entries and their start indices."""
    merged: list[str] = []
    starts: list[int] = []
    i, n = 0, len(norm)
    while i < n:
        starts.append(i)
        if i + 1 < n:
            value = DOUBLE_WORDS.get(norm[i] + " " + norm[i + 1])
            if value is not None:
                merged.append(value)
                i += 2
                continue
        merged.append(norm[i])
        i += 1
    return merged, starts


def words_from_tokens(norm: Sequence[str], synonyms: SynonymTable) -> CaptionWords:
    """§1.4 steps 4-6 on an already normalised token list."""
    merged, starts = merge_double_words(norm)
    pairs = zip(merged, starts)
    if "toilet" in merged and "seat" in merged:  # step 5: every seat goes, wherever it is
        pairs = ((w, s) for w, s in pairs if w != "seat")
    node_of = synonyms.node_of
    hits = [(w, s) for w, s in pairs if w in node_of]
    return CaptionWords(
        words=tuple(w for w, _ in hits),
        node_words=tuple(node_of[w] for w, _ in hits),
        merged=tuple(merged),
        positions=tuple(s for _, s in hits),
    )


def caption_to_words(caption: str, dialect: str = "opera", synonyms: SynonymTable | None = None) -> CaptionWords:
    """§1.4: lower-case, `nltk.word_tokenize`, normalise per dialect, merge, toilet-seat rule, lookup."""
    return words_from_tokens(normalise_caption(caption, dialect), synonyms if synonyms is not None else load_synonyms())
