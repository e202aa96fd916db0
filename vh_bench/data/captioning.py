"""Scoring shared by the captioning datasets (COCO, demo): CHAIR and, optionally, OPOPE."""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from dataclasses import dataclass, field
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


@dataclass(kw_only=True)
class CaptionDataset:
    """Base of the CHAIR captioning datasets: the prompt, the CHAIR options, OPOPE, scoring.

    Subclasses say where the ground truth comes from (`gt_source`) and list their samples."""

    prompt: str = "Please describe this image in detail."
    chair: dict[str, Any] = field(default_factory=dict)
    opope: bool = True
    name: str = "captions"
    task: str = "caption"
    max_new_tokens: int | None = None
    _gt: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def dialect(self) -> str:
        return str(self.chair.get("dialect", "opera"))

    def gt_source(self) -> str | os.PathLike:
        raise NotImplementedError

    def gt_image_ids(self) -> list[int] | None:
        """Restrict a built ground truth to these images (None: all of the source)."""
        return None

    def ground_truth(self) -> GroundTruth:
        if self._gt is None:
            from vh_bench.metrics.chair import load_ground_truth

            self._gt = load_ground_truth(self.gt_source(), dialect=self.dialect, image_ids=self.gt_image_ids())
        return self._gt

    def warm_up(self) -> None:
        """Load what scoring needs (NLTK tagger and WordNet, synonyms, ground truth) so it can run
        in a background thread while the model generates, instead of after it."""
        from vh_bench.metrics.chair_words import caption_to_words, load_synonyms

        caption_to_words("A man rides a bus next to two dogs.", self.dialect, load_synonyms(self.chair.get("synonyms")))
        self.ground_truth()

    def score(self, rows: list[dict[str, Any]], selected: Collection[str] | None = None) -> dict[str, Any]:
        # Captioning scores exactly the rows it is given (the runner already applied its selection).
        return score_captions(
            rows,
            self.ground_truth(),
            dialect=self.dialect,
            missing_gt=self.chair.get("missing_gt", "error"),
            synonyms=self.chair.get("synonyms"),
            opope=self.opope,
            seed=int(getattr(self, "seed", 0)),
        )
