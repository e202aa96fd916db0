"""`python -m vh_bench.score pope|opope ...`: rescoring of answer and caption files.

Each subcommand's function returns the summary dict that `vh_bench.score` prints as one JSON line
(fractions, not percentages), with the sha256 of every file it read (metrics.md §0).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vh_bench.metrics.pope import (
    PARSERS,
    SPLITS,
    PopeMetrics,
    QuestionSet,
    aggregate_splits,
    match_files,
    pope_intervals,
    score_matched,
)
from vh_bench.store import file_sha256


def register(subparsers: Any) -> None:
    """Add the `pope` and `opope` subcommands to `vh_bench.score`'s subparsers."""
    p = subparsers.add_parser(
        "pope",
        help="POPE metrics of yes/no answers (metrics.md §3)",
        description="Score POPE answers, matched to questions by question_id. Give one answer file per "
        "question file (same order); several splits of one source/version also get their mean and pooled metrics.",
    )
    p.add_argument("--answers", nargs="+", required=True, type=Path, metavar="FILE",
                   help="JSONL or JSON array of {question_id, answer|text} (LLaVA answer files work as is)")  # fmt: skip
    p.add_argument("--questions", nargs="+", required=True, type=Path, metavar="FILE", help="POPE question file(s)")
    p.add_argument("--parser", default="official", choices=list(PARSERS), help="yes/no parser (default: official)")
    p.add_argument("--answer-key", default=None, metavar="KEY", help="answer field (default: 'answer', else 'text')")
    p.add_argument("--allow-missing", action="store_true", help="score the answered questions when some have no answer")
    p.set_defaults(func=run_pope)

    o = subparsers.add_parser(
        "opope",
        help="offline POPE of captions (metrics.md §4); not comparable with POPE",
        description="OPOPE: POPE-style questions from ground-truth objects, answered by substring tests on captions.",
    )
    o.add_argument("--captions", required=True, type=Path, metavar="FILE", help="caption file, JSONL or JSON array")
    src = o.add_mutually_exclusive_group(required=True)
    src.add_argument("--gt", type=Path, metavar="CACHE",
                     help="GT cache {image_id: [objects]} (.json or .json.gz): objects source gt_cache")  # fmt: skip
    src.add_argument("--objects", type=Path, metavar="FILE",
                     help="POPE per-image objects JSONL: objects source pope_segmentation")  # fmt: skip
    o.add_argument("--split", default="all", choices=[*SPLITS, "all"], help="default: all three")
    o.add_argument("--seed", type=int, default=0, help="seed of the per-split random.Random (default 0)")
    o.add_argument("--beta", type=float, default=1.0,
                   help="β of the F-β score reported as f_beta (default 1, as HALC's opope_eval.py: F1)")  # fmt: skip
    o.add_argument("--image-id-key", default="image_id")
    o.add_argument("--caption-key", default="caption")
    o.set_defaults(func=run_opope)


def _identity(qs: QuestionSet) -> tuple[str | None, str | None]:
    source = qs.shipped.source if qs.shipped is not None else None
    return source, (qs.detected_version(source) if source is not None else None)


def run_pope(args: argparse.Namespace) -> dict[str, Any]:
    if len(args.questions) != len(args.answers):
        raise ValueError(
            f"{len(args.questions)} question files but {len(args.answers)} answer files; "
            "give one answer file per question file"
        )
    files: list[dict[str, Any]] = []
    per_split: dict[str, PopeMetrics] = {}
    identities = set()
    cis: dict[str, dict[str, Any]] = {}
    for k, (q_path, a_path) in enumerate(zip(args.questions, args.answers)):
        qs, ans, matched = match_files(
            q_path, a_path, parser=args.parser, answer_key=args.answer_key, allow_missing=args.allow_missing
        )
        metrics = score_matched(matched, args.parser)
        source, version = _identity(qs)
        identities.add((source, version))
        split = qs.detected_split() or f"file{k + 1}"
        if split in per_split:
            raise ValueError(f"{q_path}: split {split!r} given twice")
        for line in metrics.warnings(args.parser, f"{a_path}"):
            print(f"warning: {line}", file=sys.stderr)
        per_split[split] = metrics
        cis[split] = pope_intervals(matched, args.parser)[0]
        files.append({"split": split, "source": source, "version": version, **qs.summary(),
                      "answers": str(ans.path), "answers_sha256": ans.sha256})  # fmt: skip
    known = {i for i in identities if i != (None, None)}
    if len(known) > 1:
        # §3.7: sources (and versions) are never pooled together.
        names = ", ".join(f"{s} {v}" for s, v in sorted(known))
        raise ValueError(f"question files of different sources/versions: {names}")
    summary: dict[str, Any] = {"metric": "pope", "parser": args.parser, "allow_missing": bool(args.allow_missing)}
    if len(files) == 1:
        (split, metrics), = per_split.items()
        return {**summary, **files[0], **metrics.as_dict(context=split), "ci": cis[split]}
    source, version = next(iter(known)) if known else (None, None)
    agg = aggregate_splits(per_split)
    for split, ci in cis.items():
        agg["splits"][split]["ci"] = ci
    return {**summary, "source": source, "version": version, "files": files, **agg}


def run_opope(args: argparse.Namespace) -> dict[str, Any]:
    from vh_bench.data.pope_gen import read_objects_jsonl
    from vh_bench.metrics.opope import evaluate, load_captions, load_objects_cache

    caps = load_captions(args.captions, args.image_id_key, args.caption_key)
    if args.gt is not None:
        objects: Any = load_objects_cache(args.gt)
        objects_path, source = args.gt, "gt_cache"
    else:
        objects = read_objects_jsonl(args.objects)
        objects_path, source = args.objects, "pope_segmentation"
    splits = SPLITS if args.split == "all" else (args.split,)
    result = evaluate(caps.captions, objects, splits=splits, seed=args.seed, objects_source=source, beta=args.beta)
    summary: dict[str, Any] = {
        "metric": "opope",
        "captions": str(caps.path),
        "captions_sha256": caps.sha256,
        "n_caption_lines": caps.n_lines,
        "n_errors": caps.n_errors,
        "n_duplicate_image_ids": caps.n_duplicate_image_ids,
        "objects_file": str(objects_path),
        "objects_sha256": file_sha256(objects_path),
        **result,
    }
    summary.pop("units", None)  # per-image counts are for run comparisons, not for the printed line
    if len(splits) == 1:
        summary.update(split=splits[0], **summary.pop("splits")[splits[0]])
    return summary
