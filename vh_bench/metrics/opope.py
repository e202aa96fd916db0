"""OPOPE, offline POPE from captions (metrics.md §4, after HALC's `opope_eval.py`).

POPE-style questions are generated from per-image ground-truth objects (the generator of
`vh_bench.data.pope_gen`, §4.2) and "answered" by a substring test on the caption (§4.3).
The metrics are POPE's (§3.7). OPOPE numbers are not POPE numbers (§4.6). No torch here.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vh_bench.data.pope_gen import (
    NUM_SAMPLES,
    SPLITS,
    GeneratedQuestion,
    ImageObjects,
    generate_questions,
    images_from_mapping,
    select_images,
)
from vh_bench.metrics.pope import (
    PopeInputError,
    PopeMetrics,
    aggregate_splits,
    compute_metrics,
    file_sha256,
    read_json_records,
)

log = logging.getLogger(__name__)

# §4.1: where the per-image object lists come from; recorded with every result.
OBJECT_SOURCES: tuple[str, ...] = ("pope_segmentation", "gt_cache")
# The POPE diagnostics about free-text answers mean nothing for captions; OPOPE reports these.
REPORTED_KEYS: tuple[str, ...] = (
    "n", "TP", "FP", "TN", "FN", "n_yes", "accuracy", "precision", "recall", "f1", "yes_ratio",
)  # fmt: skip


def says_yes(obj: str, caption: str) -> bool:
    """§4.3: yes iff a space-separated piece of the object name is a substring of the raw caption.

    Case-sensitive, no tokenisation: `car` is found in "scarf" but not in "Cars", by design.
    """
    return any(piece in caption for piece in obj.split(" "))


@dataclass(frozen=True)
class CaptionSet:
    path: Path | None
    sha256: str | None
    captions: dict[int, str]  # image_id -> caption; the last line wins for a repeated id (§4.1)
    n_lines: int
    n_duplicate_image_ids: int


def load_captions(path: Path | str, image_id_key: str = "image_id", caption_key: str = "caption") -> CaptionSet:
    """The CHAIR caption file (§1.1): JSONL or one JSON array; ids are ints or decimal strings."""
    path = Path(path)
    _, records = read_json_records(path)
    captions: dict[int, str] = {}
    n_dup = 0
    for line, rec in records:
        where = f"{path}:{line}"
        if not isinstance(rec, dict):
            raise PopeInputError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for key in (image_id_key, caption_key):
            if key not in rec:
                raise PopeInputError(f"{where}: missing key {key!r}")
        raw_id, caption = rec[image_id_key], rec[caption_key]
        try:
            if isinstance(raw_id, bool) or not isinstance(raw_id, (int, str)):
                raise ValueError
            image_id = int(raw_id)
        except ValueError:
            raise PopeInputError(f"{where}: {image_id_key} must be an integer, got {raw_id!r}") from None
        if not isinstance(caption, str):
            raise PopeInputError(f"{where}: {caption_key} must be a string, got {caption!r}")
        n_dup += image_id in captions
        captions[image_id] = caption
    return CaptionSet(path, file_sha256(path), captions, len(records), n_dup)


def load_objects_cache(path: Path | str) -> dict[int, list[str]]:
    """A GT cache `{"<image_id>": [objects]}`, gzip-compressed or plain JSON (§1.7)."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise PopeInputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise PopeInputError(f"{path}: expected a JSON object {{image_id: [objects]}}")
    out: dict[int, list[str]] = {}
    for key, objects in data.items():
        if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
            raise PopeInputError(f"{path}: entry {key!r} must be a list of strings")
        try:
            out[int(key)] = objects
        except ValueError:
            raise PopeInputError(f"{path}: key {key!r} is not an image id") from None
    return out


@dataclass(frozen=True)
class OpopeSplit:
    split: str
    questions: tuple[GeneratedQuestion, ...]
    predictions: tuple[str, ...]  # "yes" | "no", one per question
    metrics: PopeMetrics


def score_split(
    captions: Mapping[int, str],
    images: Sequence[ImageObjects],
    split: str,
    *,
    seed: int = 0,
    num_samples: int = NUM_SAMPLES,
) -> OpopeSplit:
    """Generate one split's questions over the captioned images and decide them from the captions."""
    questions = generate_questions(images, split, seed=seed, num_samples=num_samples, image_ids=captions.keys())
    preds = tuple("yes" if says_yes(q.object, captions[q.image_id]) else "no" for q in questions)
    metrics = compute_metrics(((q.label, p) for q, p in zip(questions, preds)), "lmms_exact")
    return OpopeSplit(split, tuple(questions), preds, metrics)


def _report(m: PopeMetrics, context: str) -> dict[str, Any]:
    d = m.as_dict(context=context)
    return {k: d[k] for k in REPORTED_KEYS}


def evaluate(
    captions: Mapping[int, str],
    objects: Mapping[int, Iterable[str]] | Sequence[ImageObjects],
    *,
    splits: Sequence[str] = SPLITS,
    seed: int = 0,
    num_samples: int = NUM_SAMPLES,
    objects_source: str | None = None,
) -> dict[str, Any]:
    """OPOPE summary (§4.4). `objects`: a GT mapping (→ `gt_cache` order: ascending ids, sorted
    objects) or per-image object lists in file order (→ `pope_segmentation`, HALC parity)."""
    if isinstance(objects, Mapping):
        # Only captioned ids can be selected (§4.2 step 1); ascending-id order is kept either way.
        images = images_from_mapping({i: objects[i] for i in captions if i in objects})
        source = objects_source or "gt_cache"
    else:
        images = list(objects)
        source = objects_source or "pope_segmentation"
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"unknown OPOPE split {split!r}; expected one of {', '.join(SPLITS)}")
    selected = select_images(images, num_samples=num_samples, image_ids=captions.keys())
    selected_ids = {im.image_id for im in selected}
    excluded = sorted(set(captions) - selected_ids)
    if excluded:
        # §4.2 step 1: captions of images with too few (or no) listed objects are not scored.
        log.warning(
            "OPOPE: %d of %d captions excluded (image has fewer than %d objects or no object list), e.g. %s",
            len(excluded), len(captions), num_samples, excluded[:5],
        )  # fmt: skip
    per_split = {s: score_split(captions, selected, s, seed=seed, num_samples=num_samples).metrics for s in splits}
    summary: dict[str, Any] = {
        "objects_source": source,
        "seed": seed,
        "num_samples": num_samples,
        "n_captions": len(captions),
        "n_captions_excluded": len(excluded),
        "n_images": len(selected),
        "n_questions": 2 * num_samples * len(selected),
        "splits": {s: _report(m, f"OPOPE {s}") for s, m in per_split.items()},
    }
    if len(per_split) > 1:
        agg = aggregate_splits(per_split)
        summary["mean"] = agg["mean"]
        summary["pooled"] = {k: agg["pooled"][k] for k in REPORTED_KEYS}
    return summary


def score_captions_all_splits(
    pairs: Iterable[tuple[int, str]],
    objects: Mapping[int, Iterable[str]],
    *,
    seed: int = 0,
    objects_source: str = "gt_cache",
) -> dict[str, Any]:
    """OPOPE of a run's (image_id, caption) lines over all three splits; last caption per id wins."""
    captions: dict[int, str] = {}
    for image_id, caption in pairs:
        captions[int(image_id)] = caption
    return evaluate(captions, objects, seed=seed, objects_source=objects_source)
