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
from vh_bench.metrics.intervals import BootstrapSettings, UnitTable, confusion_statistics, confusion_units, intervals
from vh_bench.metrics.pope import (
    PopeInputError,
    PopeMetrics,
    aggregate_splits,
    compute_metrics,
    file_sha256,
    read_json_records,
)
from vh_bench.metrics.stats import f_beta

log = logging.getLogger(__name__)

# §4.1: where the per-image object lists come from; recorded with every result.
OBJECT_SOURCES: tuple[str, ...] = ("pope_segmentation", "gt_cache")
# The POPE diagnostics about free-text answers mean nothing for captions; OPOPE reports these.
REPORTED_KEYS: tuple[str, ...] = (
    "n", "TP", "FP", "TN", "FN", "n_yes", "accuracy", "precision", "recall", "f1", "yes_ratio",
)  # fmt: skip
# HALC's eval/opope_eval.py (12ea8b5, `print_acc`) computes F = 2PR/(P+R), i.e. β = 1; VASparse copies
# it. Other β are an option (`opope.beta`), reported as `f_beta` next to `f1`.
DEFAULT_BETA = 1.0


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
    n_errors: int = 0  # lines of failed samples (an `error` field): counted, never scored


def load_captions(path: Path | str, image_id_key: str = "image_id", caption_key: str = "caption") -> CaptionSet:
    """The CHAIR caption file (§1.1): JSONL or one JSON array; ids are ints or decimal strings."""
    path = Path(path)
    _, records = read_json_records(path)
    captions: dict[int, str] = {}
    n_dup = n_errors = 0
    for line, rec in records:
        where = f"{path}:{line}"
        if not isinstance(rec, dict):
            raise PopeInputError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        if rec.get("error"):
            n_errors += 1  # a failed sample's line (vh_bench sample files): its text is not a caption
            continue
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
    if not captions:
        what = f"all {n_errors} lines are failed samples (error field)" if n_errors else "no caption lines"
        raise PopeInputError(f"{path}: {what}; nothing to score")
    return CaptionSet(path, file_sha256(path), captions, len(records), n_dup, n_errors)


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


def _report(m: PopeMetrics, context: str, beta: float = DEFAULT_BETA) -> dict[str, Any]:
    d = m.as_dict(context=context)
    out = {k: d[k] for k in REPORTED_KEYS}
    out["f_beta"] = float(f_beta(d["precision"], d["recall"], beta))
    return out


def split_units(split: OpopeSplit) -> UnitTable:
    """Per-image confusion counts of one split (the unit the bootstrap resamples)."""

    def counts(label: str, pred: str) -> dict[str, int]:
        return {"tp": int(label == "yes" and pred == "yes"), "fp": int(label == "no" and pred == "yes"),
                "tn": int(label == "no" and pred == "no"), "fn": int(label == "yes" and pred == "no"), "n": 1}  # fmt: skip

    return confusion_units((q.image_id, counts(q.label, p)) for q, p in zip(split.questions, split.predictions))


def evaluate(
    captions: Mapping[int, str],
    objects: Mapping[int, Iterable[str]] | Sequence[ImageObjects],
    *,
    splits: Sequence[str] = SPLITS,
    seed: int = 0,
    num_samples: int = NUM_SAMPLES,
    objects_source: str | None = None,
    beta: float = DEFAULT_BETA,
    bootstrap: BootstrapSettings | None = BootstrapSettings(),
) -> dict[str, Any]:
    """OPOPE summary (§4.4). `objects`: a GT mapping (→ `gt_cache` order: ascending ids, sorted
    objects) or per-image object lists in file order (→ `pope_segmentation`, HALC parity).

    Each split also gets `f_beta` (F-β with `beta`), bootstrap intervals over images (`ci`, unless
    `bootstrap` is None) and its per-image confusion counts (`units`, for paired comparisons)."""
    if not beta > 0:
        raise ValueError(f"opope.beta must be > 0, got {beta}")
    if not captions:
        raise ValueError("OPOPE: no captions to score")
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
    scored = {s: score_split(captions, selected, s, seed=seed, num_samples=num_samples) for s in splits}
    per_split = {s: sp.metrics for s, sp in scored.items()}
    summary: dict[str, Any] = {
        "objects_source": source,
        "beta": float(beta),
        "seed": seed,
        "num_samples": num_samples,
        "n_captions": len(captions),
        "n_captions_excluded": len(excluded),
        "n_images": len(selected),
        "n_questions": 2 * num_samples * len(selected),
        "splits": {s: _report(m, f"OPOPE {s}", beta) for s, m in per_split.items()},
    }
    if bootstrap is not None and selected:
        units = {s: split_units(sp) for s, sp in scored.items()}
        for s, u in units.items():
            summary["splits"][s]["ci"] = intervals(u, confusion_statistics(beta), bootstrap)
        summary["bootstrap"] = bootstrap.as_dict()
        summary["units"] = {s: u.as_dict() for s, u in units.items()}
    if len(per_split) > 1:
        agg = aggregate_splits(per_split)
        summary["mean"] = {**agg["mean"], "f_beta": sum(d["f_beta"] for d in summary["splits"].values()) / len(per_split)}
        pooled = {k: agg["pooled"][k] for k in REPORTED_KEYS}
        summary["pooled"] = {**pooled, "f_beta": float(f_beta(pooled["precision"], pooled["recall"], beta))}
    return summary


def score_captions_all_splits(
    pairs: Iterable[tuple[int, str]],
    objects: Mapping[int, Iterable[str]] | Sequence[ImageObjects],
    *,
    seed: int = 0,
    objects_source: str | None = None,
    beta: float = DEFAULT_BETA,
) -> dict[str, Any]:
    """OPOPE of a run's (image_id, caption) lines over all three splits; last caption per id wins.

    `objects`: a GT mapping (gt_cache) or POPE's per-image object lists (pope_segmentation, §4.1)."""
    captions: dict[int, str] = {}
    for image_id, caption in pairs:
        captions[int(image_id)] = caption
    return evaluate(captions, objects, seed=seed, objects_source=objects_source, beta=beta)
