"""CHAIR ground-truth objects: load a shipped cache or build one from COCO annotations (metrics.md §1.7).

`GT[image]` = the COCO categories of the image's instance annotations ∪ the node words that
`caption_to_words` finds in its ground-truth captions. Half of it comes from captions, so a built
GT depends on the dialect that built it; that is recorded (`built_with`).

Caches are gzip-compressed JSON `{"<image_id>": [sorted node words]}`; never pickle.
"""

from __future__ import annotations

import gzip
import zlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from vh_bench.metrics.chair_words import (
    SynonymTable,
    caption_to_words,
    check_dialect,
    load_synonyms,
    singularizer_version,
)
from vh_bench.paths import cache_dir as default_cache_root
from vh_bench.paths import shared_dir
from vh_bench.store import file_sha256

log = logging.getLogger(__name__)

# The two shipped caches (§1.7), identified by content so a renamed copy is still recognised.
SHIPPED_SHA256: dict[str, str] = {
    "pattern": "0076e45a8491601c74461db0e172ed95d42b6dcfa510219ef99edd62c8408f70",  # original dialect
    "nltk": "243bd3ac8185482f752aa5d1d40745f7a31e9518ab8d77d3f9774e64361ff6d9",  # opera dialect
}
KNOWN_CACHES: dict[str, str] = {  # sha256 -> dialect it was built with
    SHIPPED_SHA256["pattern"]: "original",
    SHIPPED_SHA256["nltk"]: "opera",
}
CACHE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class GroundTruth:
    """`image_id → COCO node words`, plus where it came from (recorded with every result)."""

    objects: dict[int, frozenset[str]]
    name: str  # cache file name, or "built:<key>" for a GT built from annotations
    sha256: str  # of the cache file (for a built GT: of the gzip JSON it was written to)
    built_with: str | None  # dialect used to build it, if known
    # The file it was read from (for a built GT: the cache it was written to), so a run can be
    # rescored from its directory alone (`score run`); None for a GT made in memory.
    path: str | None = None

    def provenance(self) -> dict[str, str | None]:
        return {"name": self.name, "sha256": self.sha256, "built_with": self.built_with, "path": self.path}


def shipped_cache(kind: str) -> Path:
    """`pattern` or `nltk`: the shipped cache file under the shared folder."""
    if kind not in ("pattern", "nltk"):
        raise ValueError(f"unknown CHAIR GT cache {kind!r} (choose pattern or nltk)")
    return shared_dir() / "data" / "chair" / f"gt_objects_{kind}.json.gz"


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Loading a cache file


def _parse_cache(path: Path, data: bytes, wanted: set[int] | None) -> dict[int, frozenset[str]]:
    try:
        obj = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"CHAIR GT cache {path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"CHAIR GT cache {path}: expected a JSON object {{image_id: [objects]}}")
    out: dict[int, frozenset[str]] = {}
    interned: dict[frozenset[str], frozenset[str]] = {}  # ~3k distinct sets over 123k images
    for key, objects in obj.items():
        try:
            image_id = int(key)
        except ValueError:
            raise ValueError(f"CHAIR GT cache {path}: key {key!r} is not a decimal image id") from None
        if wanted is not None and image_id not in wanted:
            continue
        if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
            raise ValueError(f"CHAIR GT cache {path}: entry {key!r} is not a list of strings")
        fs = frozenset(objects)
        out[image_id] = interned.setdefault(fs, fs)
    return out


def _sidecar(path: Path) -> Path:
    name = path.name
    for suffix in (".json.gz", ".json"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return path.with_name(name + ".meta.json")


def _load_cache_file(path: Path, wanted: set[int] | None) -> GroundTruth:
    raw = path.read_bytes()
    sha = _sha256_bytes(raw)
    try:
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    except (OSError, EOFError, zlib.error) as exc:  # truncated or corrupted download
        raise ValueError(f"CHAIR GT cache {path}: corrupt gzip file ({type(exc).__name__}: {exc})") from None
    built_with = KNOWN_CACHES.get(sha)
    meta_path = _sidecar(path)
    if built_with is None and meta_path.is_file():
        try:
            built_with = json.loads(meta_path.read_text()).get("dialect")
        except (json.JSONDecodeError, AttributeError):
            log.warning("ignoring unreadable GT cache metadata %s", meta_path)
    return GroundTruth(_parse_cache(path, data, wanted), path.name, sha, built_with, str(path.resolve()))


# ---------------------------------------------------------------------------------------------
# Building from COCO-format annotation files (§1.7 "Building from the user's COCO annotations")

# Polygon segmentations and boxes are ~3/4 of an instances file and we never need them.
# Replacing each purely numeric `"segmentation": [[...]]` / `"bbox": [...]` value by 0 before
# parsing makes json.loads ~4x faster. The character class has no quote or brace, so a match
# cannot run past the value into the next key or object; RLE segmentations ({"counts": ...})
# do not match and are parsed normally. Two literal passes beat one pass with a backreference.
_STRIP = (
    (re.compile(rb'"segmentation"\s*:\s*\[[-0-9.,eE+\s\[\]]*\]'), b'"segmentation":0'),
    (re.compile(rb'"bbox"\s*:\s*\[[-0-9.,eE+\s\[\]]*\]'), b'"bbox":0'),
)


def _load_annotation_file(path: Path, *, strip_geometry: bool) -> dict:
    raw = path.read_bytes()
    if strip_geometry:
        lean = raw
        for pattern, replacement in _STRIP:
            lean = pattern.sub(replacement, lean)
        try:
            obj = json.loads(lean)
        except (json.JSONDecodeError, UnicodeDecodeError):
            obj = None  # fall back to the untouched text, which reports the real error position
        del lean
    if not strip_geometry or obj is None:
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"COCO annotation file {path}: not valid JSON ({exc})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("annotations"), list):
        raise ValueError(f"COCO annotation file {path}: no `annotations` list")
    return obj


def annotation_files(directory: Path) -> tuple[list[Path], list[Path]]:
    """The `instances_*.json` and `captions_*.json` files of a COCO annotation folder."""
    instances = sorted(directory.glob("instances_*.json"))
    captions = sorted(directory.glob("captions_*.json"))
    if not instances or not captions:
        kind = "instances_*.json" if not instances else "captions_*.json"
        raise FileNotFoundError(f"COCO annotation folder {directory} has no {kind} file")
    return instances, captions


def _cache_key(input_shas: Mapping[str, str], dialect: str, synonyms: SynonymTable,
               wanted: set[int] | None) -> str:
    import nltk

    ids = "all" if wanted is None else _sha256_bytes(",".join(map(str, sorted(wanted))).encode())
    normaliser = f"nltk-{nltk.__version__}" if dialect == "opera" else singularizer_version()
    blob = json.dumps({
        "format": CACHE_FORMAT_VERSION,
        "inputs": sorted(input_shas.items()),
        "dialect": dialect,
        "normaliser": normaliser,
        "synonyms": synonyms.sha256,
        "image_ids": ids,
    }, sort_keys=True)
    return _sha256_bytes(blob.encode())[:16]


def _add_instances(gt: dict[int, set[str]], doc: Mapping, wanted: set[int] | None, syn: SynonymTable) -> None:
    """§1.7 step 1: every instance annotation adds NODE[category name] to its image."""
    names = {c["id"]: c["name"] for c in doc.get("categories", [])}
    node_of = syn.node_of
    for ann in doc["annotations"]:
        image_id = ann["image_id"]
        if wanted is not None and image_id not in wanted:
            continue
        name = names[ann["category_id"]]
        if name not in node_of:  # NODE is the identity on the 80 names; anything else is bad input
            raise ValueError(f"COCO category {name!r} is not in the CHAIR synonym table")
        gt.setdefault(image_id, set()).add(node_of[name])


def _collect_captions(gt: dict[int, set[str]], doc: Mapping, wanted: set[int] | None,
                      todo: list[tuple[int, str]]) -> None:
    for ann in doc["annotations"]:
        image_id = ann["image_id"]
        if wanted is None or image_id in wanted:
            gt.setdefault(image_id, set())  # step 3: an entry even if no object is found
            todo.append((image_id, ann["caption"]))


def _add_caption_objects(gt: dict[int, set[str]], todo: list[tuple[int, str]], dialect: str,
                         syn: SynonymTable, progress: bool) -> None:
    """§1.7 step 2: the node words of every reference caption, in the chosen dialect."""
    memo: dict[str, tuple[str, ...]] = {}  # COCO has duplicate reference captions
    items = todo
    if progress:
        from tqdm import tqdm

        items = tqdm(todo, desc=f"CHAIR GT captions ({dialect})", unit="cap", disable=None)
    for image_id, caption in items:
        nodes = memo.get(caption)
        if nodes is None:
            nodes = memo[caption] = caption_to_words(caption, dialect, syn).node_words
        gt[image_id].update(nodes)


def build_objects(instances: Iterable[Mapping], captions: Iterable[Mapping], *, dialect: str = "opera",
                  image_ids: Iterable[int] | None = None, synonyms: SynonymTable | None = None,
                  progress: bool = False) -> dict[int, set[str]]:
    """§1.7 steps 1-4 on parsed COCO dicts (each with `annotations`; instances also `categories`)."""
    check_dialect(dialect)
    syn = synonyms or load_synonyms()
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    gt: dict[int, set[str]] = {}
    todo: list[tuple[int, str]] = []
    for doc in instances:
        _add_instances(gt, doc, wanted, syn)
    for doc in captions:
        _collect_captions(gt, doc, wanted, todo)
    _add_caption_objects(gt, todo, dialect, syn, progress)
    return gt


def encode_cache(objects: Mapping[int, Iterable[str]]) -> bytes:
    """The cache bytes: gzip JSON, ascending ids, sorted lists, mtime 0 so the sha256 is stable."""
    body = json.dumps({str(k): sorted(objects[k]) for k in sorted(objects)}, separators=(",", ":"))
    return gzip.compress(body.encode("utf-8"), mtime=0)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _cached(target: Path, key: str, dialect: str) -> GroundTruth | None:
    meta_path = _sidecar(target)
    if not (target.is_file() and meta_path.is_file()):
        return None
    try:
        cached_key = json.loads(meta_path.read_text()).get("key")
    except (json.JSONDecodeError, AttributeError):
        return None
    if cached_key != key:
        return None
    log.info("CHAIR GT: reusing %s", target)
    gt = _load_cache_file(target, None)
    return GroundTruth(gt.objects, f"built:{key}", gt.sha256, dialect, gt.path)


def build_ground_truth(annotation_dir: os.PathLike | str, *, dialect: str = "opera",
                       image_ids: Iterable[int] | None = None, cache_dir: os.PathLike | str | None = None,
                       out: os.PathLike | str | None = None, synonyms_path: os.PathLike | str | None = None,
                       progress: bool = True) -> tuple[GroundTruth, Path]:
    """Build (or reuse) the GT for a COCO annotation folder; returns it and the cache file path.

    The cache is keyed by the content of every input file, the dialect and its normaliser
    version, the synonym table and the requested ids, so a hit is always the same result.
    Files are parsed one at a time and reduced at once, so peak memory stays near one file.
    """
    check_dialect(dialect)
    directory = Path(annotation_dir)
    if not directory.is_dir():
        raise FileNotFoundError(f"COCO annotation folder not found: {directory}")
    inst_paths, cap_paths = annotation_files(directory)
    syn = load_synonyms(synonyms_path)
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    input_shas = {p.name: file_sha256(p) for p in inst_paths + cap_paths}
    key = _cache_key(input_shas, dialect, syn, wanted)
    root = Path(cache_dir) if cache_dir is not None else default_cache_root() / "chair_gt"
    target = Path(out) if out is not None else root / f"gt_{key}.json.gz"
    hit = _cached(target, key, dialect)
    if hit is not None:
        return hit, target

    gt: dict[int, set[str]] = {}
    todo: list[tuple[int, str]] = []
    for path in inst_paths + cap_paths:
        is_instances = path in inst_paths
        doc = _load_annotation_file(path, strip_geometry=is_instances)
        try:
            if is_instances:
                _add_instances(gt, doc, wanted, syn)
            else:
                _collect_captions(gt, doc, wanted, todo)
        except KeyError as exc:
            raise ValueError(f"COCO annotation file {path}: annotation or category without field {exc}") from None
        del doc
    _add_caption_objects(gt, todo, dialect, syn, progress)

    data = encode_cache(gt)
    sha = _sha256_bytes(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(target, data)
    import nltk

    meta = {
        "key": key, "dialect": dialect, "sha256": sha, "n_images": len(gt),
        "n_empty": sum(1 for v in gt.values() if not v),
        "restricted_to": None if wanted is None else len(wanted),
        "inputs": input_shas,
        "nltk": nltk.__version__,
        "singularizer": singularizer_version() if dialect == "original" else None,
        "synonyms_sha256": syn.sha256,
    }
    _write_atomic(_sidecar(target), json.dumps(meta, indent=1, sort_keys=True).encode())
    log.info("CHAIR GT: built %d images (%s dialect) into %s", len(gt), dialect, target)
    gt_done = GroundTruth({k: frozenset(v) for k, v in gt.items()}, f"built:{key}", sha, dialect, str(target.resolve()))
    return gt_done, target


# ---------------------------------------------------------------------------------------------
# Public entry point


def load_ground_truth(source: str | os.PathLike, *, dialect: str = "opera",
                      image_ids: Iterable[int] | None = None,
                      cache_dir: os.PathLike | None = None) -> GroundTruth:
    """A GT cache file (JSON or gzip JSON), or a COCO annotation folder to build from (§1.7).

    `image_ids` restricts what is kept (and, for a folder, what is built: much faster, identical
    sets for those images). `dialect` only matters when building. `pattern`/`nltk` name the
    shipped caches.
    """
    src = str(source)
    path = shipped_cache(src) if src in ("pattern", "nltk") else Path(src)
    wanted = None if image_ids is None else {int(i) for i in image_ids}
    if path.is_dir():
        gt, _ = build_ground_truth(path, dialect=dialect, image_ids=wanted, cache_dir=cache_dir)
        return gt
    if not path.is_file():
        raise FileNotFoundError(f"CHAIR ground truth not found: {path}")
    return _load_cache_file(path, wanted)
