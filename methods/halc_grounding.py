"""HALC grounding (methods.md §7.4): detector boxes → common post-filter → status and target box.

Detectors run through transformers (`GroundingDinoForObjectDetection`, `Owlv2ForObjectDetection`).
A `DetectorSession` holds one sample's image: its preprocessing (and, for OWLv2, the whole image
side of the model, boxes included) is computed once, and each distinct query is detected once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from PIL import Image

Box = tuple[float, float, float, float]
DEFAULT_BOX: Box = (0.2, 0.2, 0.8, 0.8)
# methods.md §9: detector defaults.
DETECTOR_HUB_IDS = {"grounding_dino": "IDEA-Research/grounding-dino-tiny", "owlv2": "google/owlv2-base-patch16-ensemble"}
BOX_THRESHOLDS = {"grounding_dino": 0.45, "owlv2": 0.05}
DETECTOR_MODEL_TYPES = {"grounding_dino": "grounding-dino", "owlv2": "owlv2"}


def round3(x: float) -> float:
    """Round half up to 3 decimals (never banker's rounding, §0)."""
    return math.floor(x * 1000.0 + 0.5) / 1000.0


def area(b: Sequence[float]) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    inter = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def normalise_boxes(boxes_px: Sequence[Sequence[float]], width: int, height: int) -> list[Box]:
    """Pixel [x0, y0, x1, y1] → [0, 1] by the original image size, clipped, rounded to 3 decimals."""
    out = []
    for x0, y0, x1, y1 in boxes_px:
        b = (x0 / width, y0 / height, x1 / width, y1 / height)
        out.append(tuple(round3(min(1.0, max(0.0, float(v)))) for v in b))
    return out  # type: ignore[return-value]


def filter_boxes(boxes: Sequence[Box], scores: Sequence[float], *, min_area: float, iou_dedup: float) -> list[Box]:
    """§7.4 post-filter on normalised boxes: area ≥ min_area, by score descending, IoU dedup."""
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))  # stable: ties keep detector order
    kept: list[Box] = []
    for i in order:
        b = boxes[i]
        if area(b) < min_area:
            continue
        if any(iou(b, k) > iou_dedup for k in kept):
            continue
        kept.append(b)
    return kept


@dataclass
class Grounding:
    status: str  # detected | not-detected | invalid
    box: Box | None  # the target box (None when invalid)
    boxes: list[Box] = field(default_factory=list)  # after the post-filter


def choose_box(boxes: Sequence[Box], *, max_boxes: int, default_box: Sequence[float]) -> Grounding:
    """> max_boxes → invalid; none → not-detected with the default box; else the smallest area."""
    boxes = list(boxes)
    if len(boxes) > max_boxes:
        return Grounding("invalid", None, boxes)
    if not boxes:
        return Grounding("not-detected", tuple(default_box), boxes)  # type: ignore[arg-type]
    areas = [area(b) for b in boxes]
    return Grounding("detected", boxes[areas.index(min(areas))], boxes)  # first smallest on ties


# ---- detectors -------------------------------------------------------------------------------
class DetectorSession(Protocol):
    def detect(self, word: str) -> tuple[list[Box], list[float]]:
        """Raw detections of `word` (normalised, clipped, rounded; before the post-filter)."""


class Detector(Protocol):
    kind: str

    def session(self, image: Image.Image) -> DetectorSession: ...


class _Memo:
    """Per-sample memo: a word detected once is not detected again in the same image."""

    def __init__(self) -> None:
        self._memo: dict[str, tuple[list[Box], list[float]]] = {}

    def detect(self, word: str) -> tuple[list[Box], list[float]]:
        if word not in self._memo:
            self._memo[word] = self._detect(word)
        return self._memo[word]

    def _detect(self, word: str) -> tuple[list[Box], list[float]]:
        raise NotImplementedError


class GroundingDinoDetector:
    """Grounding DINO; query = lowercased word + '.', processor post-processing (§7.4)."""

    kind = "grounding_dino"

    def __init__(self, model: Any, processor: Any, *, box_threshold: float, text_threshold: float) -> None:
        self.model, self.processor = model, processor
        self.box_threshold, self.text_threshold = float(box_threshold), float(text_threshold)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def session(self, image: Image.Image) -> "_GroundingDinoSession":
        return _GroundingDinoSession(self, image)


class _GroundingDinoSession(_Memo):
    def __init__(self, det: GroundingDinoDetector, image: Image.Image) -> None:
        super().__init__()
        self.det, self.size = det, image.size
        enc = det.processor.image_processor(images=image, return_tensors="pt")  # once per sample
        self.pixels = {k: v.to(det.device) for k, v in enc.items() if k in ("pixel_values", "pixel_mask")}

    @staticmethod
    def query(word: str) -> str:
        return word.lower() + "."

    def _detect(self, word: str) -> tuple[list[Box], list[float]]:
        det = self.det
        text = det.processor.tokenizer(self.query(word), return_tensors="pt", return_token_type_ids=True)
        text = {k: v.to(det.device) for k, v in text.items()}
        out = det.model(**self.pixels, **text)
        w, h = self.size
        res = det.processor.post_process_grounded_object_detection(
            out, text["input_ids"], threshold=det.box_threshold, text_threshold=det.text_threshold, target_sizes=[(h, w)]
        )[0]
        return normalise_boxes(res["boxes"].float().cpu().tolist(), w, h), res["scores"].float().cpu().tolist()


class Owlv2Detector:
    """OWLv2; query [[word]]; boxes live in the padded square frame and are mapped back (§7.4)."""

    kind = "owlv2"

    def __init__(self, model: Any, processor: Any, *, box_threshold: float) -> None:
        self.model, self.processor = model, processor
        self.box_threshold = float(box_threshold)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def session(self, image: Image.Image) -> "_Owlv2Session":
        return _Owlv2Session(self, image)


class _Owlv2Session(_Memo):
    """The image side (vision tower, box and objectness heads) once per sample; per word only the
    text tower and the class head run. Equal to the full forward (tested)."""

    def __init__(self, det: Owlv2Detector, image: Image.Image) -> None:
        super().__init__()
        self.det, self.size = det, image.size
        model = det.model
        pixels = det.processor.image_processor(images=image, return_tensors="pt")["pixel_values"].to(det.device)
        feature_map = model.image_embedder(pixel_values=pixels)[0]
        b, ph, pw, d = feature_map.shape
        self.image_feats = feature_map.reshape(b, ph * pw, d)
        self.pred_boxes = model.box_predictor(self.image_feats, feature_map)

    def _detect(self, word: str) -> tuple[list[Box], list[float]]:
        from transformers.models.owlv2.modeling_owlv2 import Owlv2ObjectDetectionOutput

        det, model = self.det, self.det.model
        text = det.processor.tokenizer([word], padding="max_length", truncation=True, return_tensors="pt")
        ids = text["input_ids"].to(det.device)
        emb = model.owlv2.get_text_features(input_ids=ids, attention_mask=text["attention_mask"].to(det.device))
        emb = emb.pooler_output
        emb = emb / torch.linalg.norm(emb, ord=2, dim=-1, keepdim=True)  # as Owlv2Model's text_embeds
        query_mask = (ids[:, 0] > 0)[None, :]
        logits, _ = model.class_predictor(self.image_feats, emb[None], query_mask)
        out = Owlv2ObjectDetectionOutput(logits=logits, pred_boxes=self.pred_boxes)
        w, h = self.size
        s = max(w, h)
        res = det.processor.image_processor.post_process_object_detection(
            outputs=out, threshold=det.box_threshold, target_sizes=[(s, s)]
        )[0]
        return normalise_boxes(res["boxes"].float().cpu().tolist(), w, h), res["scores"].float().cpu().tolist()


class CentralBox:
    """`method.detector=none` (halc-lite, §7.8): every object word is 'detected' at the default box."""

    kind = "none"

    def __init__(self, default_box: Sequence[float]) -> None:
        self.default_box = tuple(default_box)

    def session(self, image: Image.Image) -> "CentralBox":
        return self


def ground(
    session: Any, word: str, *, min_area: float, iou_dedup: float, max_boxes: int, default_box: Sequence[float]
) -> Grounding:
    """Detect `word` and apply the §7.4 rules; halc-lite skips detection entirely."""
    if isinstance(session, CentralBox):
        return Grounding("detected", tuple(session.default_box))  # type: ignore[arg-type]
    boxes, scores = session.detect(word)
    kept = filter_boxes(boxes, scores, min_area=min_area, iou_dedup=iou_dedup)
    return choose_box(kept, max_boxes=max_boxes, default_box=default_box)
