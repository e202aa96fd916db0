"""`python -m vh_bench.score chair ...` and `... chair-build-gt ...` (metrics.md §1, §1.7).

`chair` prints the overall metrics (fractions, counts, config) as one JSON line via score.py and
optionally writes the §1.9 per-caption details with `--out`. `chair-build-gt` (alias `build-gt`)
builds a GT cache from a COCO annotation folder (`instances_*.json` + `captions_*.json`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vh_bench.metrics.chair import MISSING_GT_MODES, PRESETS, read_captions, read_image_list, score_caption_file
from vh_bench.metrics.chair_gt import build_ground_truth
from vh_bench.metrics.chair_words import DIALECTS
from vh_bench.metrics.intervals import chair_statistics, chair_units, intervals
from vh_bench.store import atomic_write_text


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("chair", help="CHAIR_S / CHAIR_I object hallucination of captions (metrics.md §1)",
                              description="Score a caption file with CHAIR. Default preset: opera "
                                          "(opera dialect + pattern GT cache).")
    p.add_argument("--captions", required=True, type=Path, help="JSONL or JSON list of caption records")
    p.add_argument("--gt", default=None,
                   help="GT cache (.json/.json.gz), `pattern`/`nltk` for a shipped cache, or a COCO "
                        "annotation folder to build from (default: the preset's shipped cache)")
    p.add_argument("--dialect", choices=DIALECTS, default=None, help="text normaliser (default: the preset's)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None, help="dialect + GT cache pair (default opera)")
    p.add_argument("--image-id-key", default="image_id", help="field holding the image id (dotted paths allowed)")
    p.add_argument("--caption-key", default="caption", help="field holding the caption (dotted paths allowed)")
    p.add_argument("--image-list", type=Path, default=None,
                   help="file of image ids the captions must cover exactly (e.g. chair500_opera_llava.txt)")
    p.add_argument("--missing-gt", choices=MISSING_GT_MODES, default="error",
                   help="caption ids absent from the GT: error (default), reference (empty set), skip")
    p.add_argument("--synonyms", type=Path, default=None, help="synonym table (default: shared synonyms.txt)")
    p.add_argument("--gt-cache-dir", type=Path, default=None, help="where GTs built from annotations are cached")
    p.add_argument("--out", type=Path, default=None, help="write config + overall_metrics + sentences here")
    p.set_defaults(func=run_chair)

    b = subparsers.add_parser("chair-build-gt", aliases=["build-gt"],
                              help="build a CHAIR GT cache from COCO annotations (metrics.md §1.7)")
    b.add_argument("--annotations", required=True, type=Path,
                   help="folder with instances_*.json and captions_*.json (COCO format)")
    b.add_argument("--dialect", choices=DIALECTS, default="opera",
                   help="normaliser for the caption half of the GT (original reproduces the pattern cache)")
    restrict = b.add_mutually_exclusive_group()
    restrict.add_argument("--image-list", type=Path, default=None, help="build only these image ids")
    restrict.add_argument("--captions", type=Path, default=None, help="build only the ids of this caption file")
    b.add_argument("--image-id-key", default="image_id", help="with --captions: field holding the image id")
    b.add_argument("--out", type=Path, default=None, help="cache file to write (default: <cache>/chair_gt/gt_<key>.json.gz)")
    b.add_argument("--cache-dir", type=Path, default=None, help="cache folder when --out is not given")
    b.add_argument("--synonyms", type=Path, default=None, help="synonym table (default: shared synonyms.txt)")
    b.set_defaults(func=run_build_gt)


def run_chair(args: argparse.Namespace) -> dict[str, Any]:
    result = score_caption_file(
        args.captions, preset=args.preset, dialect=args.dialect, gt=args.gt, image_list=args.image_list,
        image_id_key=args.image_id_key, caption_key=args.caption_key, missing_gt=args.missing_gt,
        synonyms_path=args.synonyms, gt_cache_dir=args.gt_cache_dir,
    )
    if not result.per_caption:
        raise ValueError(f"{args.captions}: no caption left to score (missing_gt=skip dropped them all)")
    units = chair_units([str(s["image_id"]) for s in result.per_caption], result.per_caption)
    result.summary["ci"] = intervals(units, chair_statistics())
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(result.to_json(), indent=1, ensure_ascii=False) + "\n")
    return result.summary


def run_build_gt(args: argparse.Namespace) -> dict[str, Any]:
    ids = None
    if args.image_list is not None:
        ids = read_image_list(args.image_list)
    elif args.captions is not None:
        ids = [i for i, _ in read_captions(args.captions, image_id_key=args.image_id_key)]
    gt, path = build_ground_truth(args.annotations, dialect=args.dialect, image_ids=ids, cache_dir=args.cache_dir,
                                  out=args.out, synonyms_path=args.synonyms)
    return {
        "path": str(path),
        **gt.provenance(),
        "n_images": len(gt.objects),
        "n_empty": sum(1 for v in gt.objects.values() if not v),
        "restricted_to": None if ids is None else len(set(ids)),
    }
