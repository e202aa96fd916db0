"""The project's offline NLTK data root and its start-up checks (metrics.md §1.3).

CHAIR's numbers depend on the exact tokenizer, tagger and WordNet files, so vh_bench reads them
from one data root it assembles itself (`python -m vh_bench.setup_nltk`) and puts that root first
in `nltk.data.path`. Nothing here ever downloads: a missing resource is a one-line error naming
the command that fixes it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from vh_bench.paths import cache_dir
from vh_bench.store import file_sha256

log = logging.getLogger(__name__)

# metrics.md §1.3: the official tagger weights (NLTK's JSON release), 5,677,744 bytes.
TAGGER_WEIGHTS_SHA256 = "789e8e35f6fac656d9b7eccea29ba4e8a137cbb5b525dd31f39e4291a9e80832"


@dataclass(frozen=True)
class Resource:
    """One NLTK resource as a directory of required files inside the data root."""

    name: str  # NLTK package id, as `nltk.download` knows it
    subdir: str  # path inside the data root
    files: tuple[str, ...]  # files that must be present (WordNet has more; these are the vital ones)


PUNKT_TAB = Resource(
    "punkt_tab",
    "tokenizers/punkt_tab/english",
    ("abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt"),
)
TAGGER = Resource(
    "averaged_perceptron_tagger_eng",
    "taggers/averaged_perceptron_tagger_eng",
    tuple(f"averaged_perceptron_tagger_eng.{k}.json" for k in ("weights", "tagdict", "classes")),
)
# NLTK's WordNetCorpusReader opens lexnames and, since 3.10, index.sense at load time.
WORDNET = Resource(
    "wordnet",
    "corpora/wordnet",
    tuple(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv"))
    + ("noun.exc", "verb.exc", "adj.exc", "adv.exc", "index.sense", "lexnames"),
)
RESOURCES: tuple[Resource, ...] = (PUNKT_TAB, TAGGER, WORDNET)

SETUP_COMMAND = "python -m vh_bench.setup_nltk"


class NltkDataError(FileNotFoundError):
    """The NLTK data root is missing a resource or fails a sanity check (one line, with the fix).

    A FileNotFoundError because that is what it almost always is, and so CLIs that report
    missing inputs as one line (score.py) report this one the same way."""


def default_data_root() -> Path:
    """`$VH_BENCH_NLTK_DATA`, else `<cache_dir>/nltk_data`."""
    env = os.environ.get("VH_BENCH_NLTK_DATA")
    return Path(env).resolve() if env else cache_dir() / "nltk_data"


def missing_files(root: Path, res: Resource) -> list[str]:
    """Required files of `res` that are absent (or not regular files) under `root`."""
    d = root / res.subdir
    return [f for f in res.files if not (d / f).is_file() or (d / f).is_symlink()]


def tagger_weights_ok(root: Path) -> bool:
    weights = root / TAGGER.subdir / TAGGER.files[0]
    return weights.is_file() and file_sha256(weights) == TAGGER_WEIGHTS_SHA256


def _fail(root: Path, what: str) -> NltkDataError:
    return NltkDataError(f"NLTK data root {root}: {what}; run `{SETUP_COMMAND} --dest {root}`")


_lock = threading.Lock()
_checked: dict[Path, set[str]] = {}  # root -> check levels passed ("basic", "full")
_active_root: Path | None = None  # the root last passed to a successful ensure_nltk()
_tagger = None


def ensure_nltk(data_root: Path | None = None, *, full: bool = True) -> Path:
    """Put the project's NLTK data root first in `nltk.data.path` and run the §1.3 start-up checks.

    `full=False` checks the files, the tagger sha256 and the tokenizer only, deferring the tagger
    and WordNet sanity checks: the original dialect never lemmatizes, and loading WordNet costs
    ~3 s. Idempotent and cheap after the first call per root. Raises `NltkDataError` (one line
    naming the missing resource and the setup command) instead of ever calling `nltk.download`.
    """
    root = Path(data_root).resolve() if data_root is not None else default_data_root()
    level = "full" if full else "basic"
    global _active_root
    with _lock:
        import nltk

        # Always re-assert first place: other code may have prepended its own root since.
        if not nltk.data.path or Path(nltk.data.path[0]) != root:
            nltk.data.path[:] = [root.as_posix()] + [p for p in nltk.data.path if Path(p) != root]
        done = _checked.setdefault(root, set())
        if level in done:
            _active_root = root
            return root
        if "basic" not in done:
            for res in RESOURCES:
                missing = missing_files(root, res)
                if missing:
                    raise _fail(root, f"resource {res.name} missing ({res.subdir}/{missing[0]})")
            if not tagger_weights_ok(root):
                raise _fail(root, f"tagger weights {TAGGER.subdir}/{TAGGER.files[0]} do not have sha256 "
                            f"{TAGGER_WEIGHTS_SHA256[:12]}…")
            _sanity_checks(root, full=False)
            done.add("basic")
        if full:
            _sanity_checks(root, full=True)
            done.add("full")
        _active_root = root
        log.debug("NLTK data root %s ok (%s checks, nltk %s)", root, level, nltk.__version__)
        return root


def _sanity_checks(root: Path, *, full: bool) -> None:
    """The behavioural checks of metrics.md §1.3; each failure names the resource involved."""
    from nltk.tokenize import word_tokenize

    checks: list = [
        ("punkt_tab", lambda: word_tokenize("a man. a dog."), ["a", "man", ".", "a", "dog", "."]),
    ]
    if full:
        from nltk.stem import WordNetLemmatizer

        checks = [("averaged_perceptron_tagger_eng", lambda: _load_tagger().tag(["a", "man"]),
                   [("a", "DT"), ("man", "NN")])]
        wnl = WordNetLemmatizer()
        for (word, pos), want in {("skiing", "v"): "ski", ("men", "n"): "men", ("vases", "n"): "vas",
                                  ("buses", "n"): "bus"}.items():
            checks.append(("wordnet", lambda w=word, p=pos: wnl.lemmatize(w, p), want))
    for name, fn, want in checks:
        try:
            got = fn()
        except LookupError as exc:
            first = str(exc).strip().splitlines()
            raise _fail(root, f"resource {name} failed to load ({first[0] if first else exc})") from None
        if got != want:
            raise _fail(root, f"sanity check on {name} failed: got {got!r}, expected {want!r}")


def _load_tagger():
    # nltk.pos_tag builds a new PerceptronTagger (re-reading 5.7 MB of JSON) on every call;
    # one shared instance gives identical tags (pos_tag just calls tagger.tag) far faster.
    global _tagger
    if _tagger is None:
        from nltk.tag.perceptron import PerceptronTagger

        _tagger = PerceptronTagger()
    return _tagger


def ensure_active(*, full: bool = True) -> Path:
    """`ensure_nltk` on the root last set up (so a caller's custom root sticks), else the default."""
    return ensure_nltk(_active_root, full=full)


def get_tagger():
    """The shared English perceptron tagger, after `ensure_active()`."""
    ensure_active()
    with _lock:
        return _load_tagger()
