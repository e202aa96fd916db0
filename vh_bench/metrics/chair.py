"""CHAIR (Rohrbach et al., 2018): object hallucination in free-form COCO captions (metrics.md §1).

    CHAIR_S = hallucinated captions / captions        CHAIR_I = hallucinated mentions / mentions

Text processing lives in `chair_words` (§1.4), ground truth in `chair_gt` (§1.7); this module
reads caption files, scores them (§1.6, §1.8) and shapes the output (§1.9). Fractions are stored,
never percentages (§0); a zero denominator gives `None` (JSON null) and a warning, not 0.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.metrics.chair_gt import SHIPPED_SHA256, GroundTruth, load_ground_truth, shipped_cache
from vh_bench.metrics.chair_words import (
    DIALECTS,
    CaptionWords,
    caption_to_words,
    check_dialect,
    load_synonyms,
    normalise_caption,
    normaliser,
    singularizer_version,
    words_from_tokens,
)
from vh_bench.metrics.pope import read_json_records
from vh_bench.store import file_sha256

log = logging.getLogger(__name__)

MISSING_GT_MODES = ("error", "reference", "skip")

# §1.2: preset -> (dialect, shipped GT cache)
PRESETS: dict[str, tuple[str, str]] = {
    "opera": ("opera", "pattern"),
    "halc": ("opera", "nltk"),
    "original": ("original", "pattern"),
}

__all__ = [
    "DIALECTS", "MISSING_GT_MODES", "PRESETS", "CaptionWords", "ChairResult", "GroundTruth",
    "caption_to_words", "evaluate_chair", "load_ground_truth", "read_captions", "read_image_list",
    "check_image_list", "score_caption_file",
]


@dataclass
class ChairResult:
    """`summary`: overall metrics + counts + `config` (provenance); `per_caption`: §1.9 sentences."""

    summary: dict[str, Any]
    per_caption: list[dict[str, Any]] = field(default_factory=list)

    @property
    def overall_metrics(self) -> dict[str, Any]:
        return {k: v for k, v in self.summary.items() if k not in ("config", "warnings")}

    def to_json(self) -> dict[str, Any]:
        """The §1.9 `results.json` layout: config, overall_metrics, sentences."""
        return {
            "config": self.summary["config"],
            "overall_metrics": self.overall_metrics,
            "warnings": self.summary.get("warnings", []),
            "sentences": self.per_caption,
        }


def _ratio(num: float, den: int, what: str, warnings: list[str]) -> float | None:
    # §0: a zero denominator is null plus a warning; 0.0 would read as a perfect score.
    if den == 0:
        msg = f"CHAIR: {what} is undefined (zero denominator); reported as null"
        log.warning(msg)
        warnings.append(msg)
        return None
    return num / den


def evaluate_chair(captions: Sequence[tuple[int, str]], gt: GroundTruth, *, dialect: str = "opera",
                   missing_gt: str = "error", synonyms_path: os.PathLike | None = None) -> ChairResult:
    """Score `(image_id, caption)` pairs, in order, duplicates included (§1.6, §1.8)."""
    import nltk

    check_dialect(dialect)
    if missing_gt not in MISSING_GT_MODES:
        raise ValueError(f"chair.missing_gt: unknown mode {missing_gt!r} (choose one of: {', '.join(MISSING_GT_MODES)})")
    syn = load_synonyms(synonyms_path)
    normaliser(dialect)  # load (and check) the text tools before the loop, not inside it
    objects = gt.objects
    captions = [(_image_id(i, f"CHAIR caption #{n}"), c) for n, (i, c) in enumerate(captions)]

    missing = [image_id for image_id, _ in captions if image_id not in objects]
    if missing and missing_gt == "error":
        shown = ", ".join(str(i) for i in list(dict.fromkeys(missing))[:10])
        raise ValueError(
            f"CHAIR: {len(missing)} caption(s) have image ids absent from GT {gt.name} (e.g. {shown}); "
            "set chair.missing_gt to reference or skip")

    empty: frozenset[str] = frozenset()
    sentences: list[dict[str, Any]] = []
    n_captions = n_halluc_caps = mentions_sum = halluc_sum = covered_sum = gt_sum = tokens_sum = 0
    seen: set[int] = set()
    n_duplicates = 0
    for image_id, caption in captions:
        if not isinstance(caption, str):
            raise ValueError(f"CHAIR: caption of image {image_id} is {type(caption).__name__}, not a string")
        gt_objs = objects.get(image_id)
        if gt_objs is None:
            if missing_gt == "skip":
                continue
            gt_objs = empty  # "reference": the reference's empty-set behaviour
        if image_id in seen:
            n_duplicates += 1
        seen.add(image_id)
        cw = words_from_tokens(normalise_caption(caption, dialect), syn)
        hallucinated = [(w, nw, pos) for w, nw, pos in zip(cw.words, cw.node_words, cw.positions)
                        if nw not in gt_objs]
        covered = {nw for nw in cw.node_words if nw in gt_objs}
        n_tokens = len(cw.merged)

        n_captions += 1
        n_halluc_caps += bool(hallucinated)
        mentions_sum += len(cw.node_words)
        halluc_sum += len(hallucinated)
        covered_sum += len(covered)
        gt_sum += len(gt_objs)
        tokens_sum += n_tokens

        sentence = {
            "image_id": image_id,
            "caption": caption,
            "mscoco_hallucinated_words": [[w, nw] for w, nw, _ in hallucinated],
            "mscoco_gt_words": sorted(gt_objs),
            "mscoco_generated_words": list(cw.node_words),
            "hallucination_idxs": [pos for _, _, pos in hallucinated],
            "words": list(cw.merged),
            "metrics": {
                "CHAIRs": 1 if hallucinated else 0,
                "CHAIRi": len(hallucinated) / len(cw.words) if cw.words else 0.0,
                "Recall": len(covered) / len(gt_objs) if gt_objs else 0.0,
                "Len": 0.0,  # the reference never fills the per-sentence Len; n_tokens carries it
                "n_tokens": n_tokens,
                "n_mentions": len(cw.node_words),
                "n_hallucinated": len(hallucinated),
            },
        }
        if image_id not in objects:
            sentence["gt_missing"] = True
        sentences.append(sentence)

    warnings: list[str] = []
    summary: dict[str, Any] = {
        # §1.8, in the reference's key names and evaluation order
        "CHAIRs": _ratio(n_halluc_caps, n_captions, "CHAIRs (no captions)", warnings),
        "CHAIRi": _ratio(halluc_sum, mentions_sum, "CHAIRi (no object mentions)", warnings),
        "Recall": _ratio(covered_sum, gt_sum, "Recall (no ground-truth objects)", warnings),
        "Len": _ratio(0.01 * tokens_sum, n_captions, "Len (no captions)", []),  # multiply first (§1.8)
        "avg_tokens": tokens_sum / n_captions if n_captions else None,
        "object_mentions": mentions_sum,
        "hallucinated_mentions": halluc_sum,
        "n_captions": n_captions,
        "n_hallucinated_captions": n_halluc_caps,
        "covered_sum": covered_sum,
        "gt_sum": gt_sum,
        "tokens_sum": tokens_sum,
        "n_missing_gt": len(missing),
        "n_duplicate_image_ids": n_duplicates,
        "config": {
            "dialect": dialect,
            "gt_cache": gt.provenance(),
            "singularizer": singularizer_version() if dialect == "original" else None,
            "nltk_version": nltk.__version__,
            "synonyms": {"name": Path(syn.path).name, "sha256": syn.sha256},
            "missing_gt": missing_gt,
        },
        "warnings": warnings,
    }
    return ChairResult(summary, sentences)


# ---------------------------------------------------------------------------------------------
# Inputs (§1.1)


def _get(record: dict, key: str) -> Any:
    """`record[key]`, or a dotted path (`meta.image_id`) into nested objects."""
    if key in record:
        return record[key]
    cur: Any = record
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(key)
        cur = cur[part]
    return cur


def _image_id(value: Any, where: str) -> int:
    # An int or a decimal string (§1.1); bools and floats are rejected rather than coerced.
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{where}: image id {value!r} is not an int or decimal string")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{where}: image id {value!r} is not a decimal integer") from None


def read_captions(path: os.PathLike | str, *, image_id_key: str = "image_id",
                  caption_key: str = "caption") -> list[tuple[int, str]]:
    """A JSONL file (blank lines ignored) or one JSON array of objects → `(image_id, caption)`.

    Lines of failed samples (a non-empty `error` field, as in vh_bench's sample files) are left out;
    `read_caption_file` also says how many."""
    return read_caption_file(path, image_id_key=image_id_key, caption_key=caption_key)[0]


def read_caption_file(path: os.PathLike | str, *, image_id_key: str = "image_id",
                      caption_key: str = "caption") -> tuple[list[tuple[int, str]], int]:
    """(`(image_id, caption)` pairs, number of failed-sample lines left out)."""
    p = Path(path)
    try:
        _, lines = read_json_records(p)  # the shared JSON/JSONL reader (line numbers, U+2028-safe)
    except FileNotFoundError:
        raise FileNotFoundError(f"caption file not found: {p}") from None
    records = [(f"{p}:{n}", r) for n, r in lines]
    out = []
    n_errors = 0
    for where, rec in records:
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        if rec.get("error"):
            n_errors += 1  # the text of a failed sample is not a caption (it is "")
            continue
        try:
            image_id, caption = _get(rec, image_id_key), _get(rec, caption_key)
        except KeyError as exc:
            hint = ""
            if exc.args[0] == caption_key and "text" in rec and "sample_id" in rec:
                hint = (" (this is a vh_bench run's sample file: its captions are under `text`; "
                        "`python -m vh_bench.score run <run_dir>` rescores the run as it was scored)")  # fmt: skip
            raise ValueError(f"{where}: missing field {exc.args[0]!r}{hint}") from None
        if not isinstance(caption, str):
            raise ValueError(f"{where}: caption is {type(caption).__name__}, not a string")
        out.append((_image_id(image_id, where), caption))  # used exactly as generated (§1.1)
    return out, n_errors


def read_image_list(path: os.PathLike | str) -> list[int]:
    """One integer image id per line (blank lines ignored)."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"image list not found: {p}") from None
    ids = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                ids.append(int(line.strip()))
            except ValueError:
                raise ValueError(f"image list {p}:{n}: {line.strip()!r} is not an integer id") from None
    return ids


def check_image_list(image_ids: Sequence[int], expected: Sequence[int], name: str = "image list") -> None:
    """§1.1: the captions must cover exactly the configured ids, each once."""
    want = set(expected)
    got: set[int] = set()
    dup = []
    for i in image_ids:
        if i in got:
            dup.append(i)
        got.add(i)
    miss = sorted(want - got)
    extra = sorted(got - want)
    if miss or extra or dup:
        parts = [f"{len(v)} {k} (e.g. {', '.join(map(str, v[:5]))})"
                 for k, v in (("missing", miss), ("extra", extra), ("duplicate", sorted(set(dup)))) if v]
        raise ValueError(f"captions do not match {name}: " + "; ".join(parts))


def score_caption_file(captions_path: os.PathLike | str, *, preset: str | None = None,
                       dialect: str | None = None, gt: str | os.PathLike | GroundTruth | None = None,
                       image_list: os.PathLike | str | None = None, image_id_key: str = "image_id",
                       caption_key: str = "caption", missing_gt: str = "error",
                       synonyms_path: os.PathLike | None = None,
                       gt_cache_dir: os.PathLike | None = None) -> ChairResult:
    """Read, check and score one caption file; records every input's provenance (§1.9 `config`).

    A preset supplies the dialect and GT cache (§1.2); explicit `dialect`/`gt` override it, and the
    recorded `config.preset` is the preset the final (dialect, cache) pair matches, or null.
    """
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"chair.preset: unknown preset {preset!r} (choose one of: {', '.join(PRESETS)})")
    preset_dialect, preset_cache = PRESETS[preset or "opera"]
    dialect = check_dialect(dialect or preset_dialect)
    cap_path = Path(captions_path)
    pairs, n_errors = read_caption_file(cap_path, image_id_key=image_id_key, caption_key=caption_key)
    if not pairs:
        # CHAIR of nothing is null everywhere; exit with the reason instead of printing nulls.
        what = f"all {n_errors} lines are failed samples (error field)" if n_errors else "no caption lines"
        raise ValueError(f"{cap_path}: {what}; nothing to score")
    listed: list[int] | None = None
    if image_list is not None:
        listed = read_image_list(image_list)
        check_image_list([i for i, _ in pairs], listed, f"image list {image_list}")
    if isinstance(gt, GroundTruth):
        ground = gt
    else:
        source = gt if gt is not None else shipped_cache(preset_cache)
        ids = {i for i, _ in pairs}
        ground = load_ground_truth(source, dialect=dialect, image_ids=ids, cache_dir=gt_cache_dir)
    result = evaluate_chair(pairs, ground, dialect=dialect, missing_gt=missing_gt, synonyms_path=synonyms_path)
    result.summary["n_errors"] = n_errors
    cfg = result.summary["config"]
    # Record the preset the run actually matches, so an override never carries a misleading name.
    cfg["preset"] = next((name for name, (d, cache) in PRESETS.items()
                          if d == dialect and ground.sha256 == SHIPPED_SHA256[cache]), None)
    if preset is not None and cfg["preset"] != preset:
        log.warning("CHAIR: preset %s overridden by explicit dialect/gt; recorded preset %s",
                    preset, cfg["preset"])
    cfg["captions"] = {"name": str(cap_path), "sha256": file_sha256(cap_path)}
    cfg["image_list"] = None if image_list is None else {
        "name": Path(image_list).name, "sha256": file_sha256(image_list), "n_ids": len(listed or [])}
    return result
