"""Scoring shared by the captioning datasets (COCO, demo): CHAIR and, optionally, OPOPE."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vh_bench.errors import ConfigError

if TYPE_CHECKING:
    from vh_bench.metrics.chair import GroundTruth

log = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def caption_pairs(rows: list[dict[str, Any]]) -> tuple[list[tuple[int, str]], int]:
    """(image_id, caption) of rows without errors, and how many rows had errors."""
    pairs = [(int(r["image_id"]), str(r["text"])) for r in rows if not r.get("error")]
    return pairs, sum(1 for r in rows if r.get("error"))


OPOPE_OBJECT_SOURCES = ("gt_cache", "pope_segmentation")


@dataclass(frozen=True)
class OpopeOptions:
    """`dataset.opope.*` (metrics.md §4): `true`/`false` or a mapping of these keys."""

    enabled: bool = True
    objects: str = "gt_cache"  # gt_cache: the dataset's CHAIR ground truth; pope_segmentation: POPE's file
    segmentation_file: str | None = None  # POPE's coco_ground_truth_segmentation.json (objects=pope_segmentation)
    beta: float = 1.0  # F-β; HALC's opope_eval.py reports F1 (β = 1)
    seed: int | None = None  # None: the dataset's `seed` (as before), else 0

    @classmethod
    def parse(cls, value: Any) -> OpopeOptions:
        from vh_bench.errors import ConfigError

        if value is None or isinstance(value, bool):
            return cls(enabled=bool(value))
        if not isinstance(value, dict):
            raise ConfigError("dataset.opope", f"must be true, false or a mapping, got {value!r}")
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"dataset.opope.{sorted(unknown)[0]}", "unknown key",
                              "keys: " + ", ".join(cls.__dataclass_fields__))  # fmt: skip
        return cls(**value)

    def check(self) -> None:
        from vh_bench.errors import ConfigError

        if not self.enabled:
            return
        if self.objects not in OPOPE_OBJECT_SOURCES:
            raise ConfigError("dataset.opope.objects", f"{self.objects!r} is not an object source",
                              "gt_cache or pope_segmentation (metrics.md §4.1)")  # fmt: skip
        if not float(self.beta) > 0:
            raise ConfigError("dataset.opope.beta", f"must be > 0, got {self.beta}")
        if self.objects == "pope_segmentation":
            if not self.segmentation_file:
                raise ConfigError("dataset.opope.segmentation_file", "is not set",
                                  "POPE's coco_ground_truth_segmentation.json, needed for objects=pope_segmentation")  # fmt: skip
            if not Path(self.segmentation_file).is_file():
                raise ConfigError("dataset.opope.segmentation_file", f"{self.segmentation_file} not found")


def _caption_rows(rows: list[dict[str, Any]]) -> tuple[list[tuple[str, int, str]], int]:
    """(sample_id, image_id, caption) of rows without errors, and how many rows had errors."""
    ok = [(str(r.get("sample_id", r["image_id"])), int(r["image_id"]), str(r["text"])) for r in rows if not r.get("error")]
    return ok, len(rows) - len(ok)


def score_captions(
    rows: list[dict[str, Any]],
    gt: GroundTruth,
    *,
    dialect: str,
    missing_gt: str,
    synonyms: str | os.PathLike | None,
    opope: bool | OpopeOptions,
    seed: int = 0,
) -> dict[str, Any]:
    """CHAIR (with bootstrap intervals over captions) and OPOPE of a run's sample lines.

    `units` holds each scored caption's counts so the report can compare runs caption by caption.
    Rows of failed samples are counted (`n_errors`) and left out; a run with none left is an error.
    """
    from vh_bench.metrics import chair as chair_metric
    from vh_bench.metrics.intervals import BootstrapSettings, chair_statistics, chair_units, intervals

    options = opope if isinstance(opope, OpopeOptions) else OpopeOptions(enabled=bool(opope))
    scored, n_errors = _caption_rows(rows)
    if not scored:
        raise ValueError(f"nothing to score: all {n_errors} samples failed (see `errors` in the sample lines)")
    pairs = [(i, c) for _, i, c in scored]
    out: dict[str, Any] = {"n_scored": len(pairs), "n_errors": n_errors}
    res = chair_metric.evaluate_chair(pairs, gt, dialect=dialect, missing_gt=missing_gt, synonyms_path=synonyms)
    out["chair"] = res.summary
    # missing_gt=skip drops captions of unknown images: keep the ids of the ones that were scored.
    kept = [sid for sid, i, _ in scored if missing_gt != "skip" or i in gt.objects]
    if res.per_caption:
        units = chair_units(kept, res.per_caption)
        settings = BootstrapSettings()
        out["chair"]["ci"] = intervals(units, chair_statistics(), settings)
        out["bootstrap"] = settings.as_dict()
        out["units"] = {"chair": units.as_dict()}
    if options.enabled:
        from vh_bench.metrics import opope as opope_metric

        objects: Any = gt.objects
        if options.objects == "pope_segmentation":
            from vh_bench.data.pope_gen import read_objects_jsonl

            objects = read_objects_jsonl(str(options.segmentation_file))
        opope_seed = int(options.seed) if options.seed is not None else seed
        try:
            out["opope"] = opope_metric.score_captions_all_splits(
                pairs, objects, seed=opope_seed, objects_source=options.objects, beta=float(options.beta)
            )
        except ValueError as exc:
            # Too few images/objects to draw negatives (e.g. a 2-sample smoke run): say so in the
            # results instead of failing the whole scoring.
            log.warning("OPOPE not computed: %s", exc)
            out["opope"] = {"error": str(exc), "objects_source": options.objects, "beta": float(options.beta)}
        if options.objects == "pope_segmentation":
            from vh_bench.store import file_sha256

            out["opope"]["objects_file"] = str(options.segmentation_file)
            out["opope"]["objects_sha256"] = file_sha256(str(options.segmentation_file))
        elif "error" not in out["opope"]:
            out["opope"]["objects_file"] = gt.provenance()
    return out


@dataclass(kw_only=True)
class CaptionDataset:
    """Base of the CHAIR captioning datasets: the prompt, the CHAIR options, OPOPE, scoring.

    Subclasses say where the ground truth comes from (`gt_source`) and list their samples."""

    prompt: str = "Please describe this image in detail."
    chair: dict[str, Any] = field(default_factory=dict)
    opope: Any = True  # bool, or the mapping of OpopeOptions (`dataset.opope.*`)
    name: str = "captions"
    task: str = "caption"
    max_new_tokens: int | None = None
    _gt: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def opope_options(self) -> OpopeOptions:
        return OpopeOptions.parse(self.opope)

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

    def check_scoring(self, gt_key: str) -> None:
        """Load every scoring input now (dialect, options, synonyms, ground truth), before the
        model: a corrupt file must fail in seconds as one line naming its key, not as a traceback
        after all generation. The ground truth is kept for in-process scoring."""
        from vh_bench.metrics.chair import MISSING_GT_MODES
        from vh_bench.metrics.chair_words import DIALECTS, load_synonyms

        if self.dialect not in DIALECTS:
            raise ConfigError("dataset.chair.dialect", f"{self.dialect!r} is not one of {', '.join(DIALECTS)}")
        missing = self.chair.get("missing_gt", "error")
        if missing not in MISSING_GT_MODES:
            raise ConfigError("dataset.chair.missing_gt", f"{missing!r} is not one of {', '.join(MISSING_GT_MODES)}")
        try:
            load_synonyms(self.chair.get("synonyms"))
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise ConfigError("dataset.chair.synonyms", _one_line(exc)) from None
        try:
            gt = self.ground_truth()
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(gt_key, _one_line(exc)) from None
        ids = self.gt_image_ids()
        uncovered = [i for i in ids or () if i not in gt.objects]
        if uncovered and missing == "error":
            raise ConfigError(
                gt_key,
                f"{self.gt_source()}: {len(uncovered)} of the {len(ids)} images have no ground-truth objects "
                f"(e.g. {uncovered[0]})",
                "use a ground truth that covers the id list, or dataset.chair.missing_gt=reference or skip",
            )

    def use_ground_truth(self, gt: GroundTruth) -> None:
        """Score against `gt` (the one a run recorded, for `score run`) instead of loading one."""
        self._gt = gt

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
            opope=self.opope_options,
            seed=int(getattr(self, "seed", 0)),
        )
