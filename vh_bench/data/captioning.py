"""Scoring shared by the captioning datasets (COCO, demo): CHAIR and, optionally, OPOPE."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vh_bench.metrics.chair import GroundTruth

log = logging.getLogger(__name__)


def caption_pairs(rows: list[dict[str, Any]]) -> tuple[list[tuple[int, str]], int]:
    """(image_id, caption) of rows without errors, and how many rows had errors."""
    pairs = [(int(r["image_id"]), str(r["text"])) for r in rows if not r.get("error")]
    return pairs, sum(1 for r in rows if r.get("error"))


def score_captions(
    rows: list[dict[str, Any]],
    gt: GroundTruth,
    *,
    dialect: str,
    missing_gt: str,
    synonyms: str | os.PathLike | None,
    opope: bool,
    seed: int = 0,
) -> dict[str, Any]:
    from vh_bench.metrics import chair as chair_metric

    pairs, n_errors = caption_pairs(rows)
    out: dict[str, Any] = {"n_scored": len(pairs), "n_errors": n_errors}
    if not pairs:
        return out
    res = chair_metric.evaluate_chair(pairs, gt, dialect=dialect, missing_gt=missing_gt, synonyms_path=synonyms)
    out["chair"] = res.summary
    if opope:
        from vh_bench.metrics import opope as opope_metric

        try:
            out["opope"] = opope_metric.score_captions_all_splits(pairs, gt.objects, seed=seed)
        except ValueError as exc:
            # Too few images/objects to draw negatives (e.g. a 2-sample smoke run): say so in the
            # results instead of failing the whole scoring.
            log.warning("OPOPE not computed: %s", exc)
            out["opope"] = {"error": str(exc)}
    return out
