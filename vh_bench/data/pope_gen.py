"""POPE-style question generation: 3 present objects per image, each followed by an absent one.

One implementation serves two consumers (metrics.md §4.2, the reference algorithm):
- the `pope` dataset when it generates its questions from COCO-format annotations (demo data);
- OPOPE, which asks the same questions of captions instead of a model.

Negatives are drawn at random (`random`), by global object frequency (`popular`) or by
co-occurrence with the positive (`adversarial`). All randomness comes from one
`random.Random(seed)` per split, never from the global RNG (metrics.md §4.2 step 5).
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vh_bench.metrics.pope import SPLITS  # the POPE splits (also imported from here, e.g. by OPOPE)

NUM_SAMPLES = 3  # positives (and negatives) per image, metrics.md §4.2 step 1


class NoNegativeError(ValueError):
    """No object qualifies as a negative for an image; the reference would loop forever (§4.2)."""


@dataclass(frozen=True)
class ImageObjects:
    """One image and its ground-truth objects, in the order that picks the positives."""

    image_id: int
    image: str  # file name, e.g. COCO_val2014_000000131089.jpg
    objects: tuple[str, ...]


@dataclass(frozen=True)
class GeneratedQuestion:
    question_id: int
    image_id: int
    image: str
    object: str
    label: str  # "yes" | "no"

    @property
    def text(self) -> str:
        return question_text(self.object)

    def as_record(self) -> dict[str, Any]:
        """The POPE question-file record (metrics.md §3.1)."""
        return {"question_id": self.question_id, "image": self.image, "text": self.text, "label": self.label}


@dataclass(frozen=True)
class SamplingTables:
    """Frequencies and orders of metrics.md §4.2 steps 2-3, over the selected images."""

    objects_all: tuple[str, ...]
    freq: dict[str, int]
    popular_order: tuple[str, ...]
    adversarial_order: dict[str, tuple[str, ...]]


def question_text(obj: str) -> str:
    # The article follows the object's first letter; POPE's v1 "imange" typo is not reproduced.
    article = "an" if obj[:1].lower() in "aeiou" else "a"
    return f"Is there {article} {obj} in the image?"


def coco_val2014_name(image_id: int) -> str:
    return f"COCO_val2014_{image_id:012d}.jpg"


def image_id_from_name(name: str) -> int:
    """The digits after the last `_` of a file name, without leading zeros (metrics.md §4.1)."""
    tail = name.rsplit("_", 1)[-1]
    match = re.match(r"\d+", tail)
    if match is None:
        raise ValueError(f"cannot read an image id from file name {name!r}")
    return int(match.group())


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    # Duplicates in an object list are ignored (first occurrence kept): frequencies count images.
    return tuple(dict.fromkeys(items))


def images_from_mapping(
    objects: Mapping[int, Iterable[str]],
    file_name: Callable[[int], str] = coco_val2014_name,
) -> list[ImageObjects]:
    """Ground-truth mapping → images in ascending id order, objects sorted (metrics.md §4.1 gt_cache)."""
    return [
        ImageObjects(int(image_id), file_name(int(image_id)), tuple(sorted(set(objects[image_id]))))
        for image_id in sorted(objects, key=int)
    ]


def images_from_coco(annotations: Path | str | Mapping[str, Any]) -> list[ImageObjects]:
    """COCO instances JSON → images in `images[]` order; objects in order of first annotation.

    Category names are the COCO node words themselves (NODE is the identity on them, §1.7).
    """
    if isinstance(annotations, Mapping):
        data, where = annotations, "annotations"
    else:
        where = str(annotations)
        with open(annotations, encoding="utf-8") as fh:
            data = json.load(fh)
    try:
        cats = {int(c["id"]): str(c["name"]) for c in data["categories"]}
        images = [(int(im["id"]), str(im["file_name"])) for im in data["images"]]
        per_image: dict[int, dict[str, None]] = {image_id: {} for image_id, _ in images}
        for n, ann in enumerate(data["annotations"]):
            image_id, cat_id = int(ann["image_id"]), int(ann["category_id"])
            if image_id not in per_image:
                raise ValueError(f"{where}: annotations[{n}] refers to unknown image_id {image_id}")
            if cat_id not in cats:
                raise ValueError(f"{where}: annotations[{n}] refers to unknown category_id {cat_id}")
            per_image[image_id].setdefault(cats[cat_id])
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a COCO instances file (missing or malformed {exc})") from exc
    return [ImageObjects(image_id, name, tuple(per_image[image_id])) for image_id, name in images]


def read_objects_jsonl(path: Path | str) -> list[ImageObjects]:
    """POPE's per-image object file: JSONL `{"image", "objects", "image_id"?}`, file order kept (§4.1)."""
    out: list[ImageObjects] = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: invalid JSON ({exc.msg})") from exc
            if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
                raise ValueError(f"{where}: expected an object with a string 'image'")
            objects = rec.get("objects")
            if not isinstance(objects, list) or not all(isinstance(o, str) for o in objects):
                raise ValueError(f"{where}: 'objects' must be a list of strings")
            image_id = int(rec["image_id"]) if rec.get("image_id") is not None else image_id_from_name(rec["image"])
            out.append(ImageObjects(image_id, rec["image"], tuple(objects)))
    return out


def select_images(
    images: Iterable[ImageObjects],
    *,
    num_samples: int = NUM_SAMPLES,
    image_ids: Collection[int] | None = None,
) -> list[ImageObjects]:
    """Step 1: images with >= num_samples distinct objects (and, if given, an id in `image_ids`), in order."""
    return [
        im
        for im in images
        if len(_unique(im.objects)) >= num_samples and (image_ids is None or im.image_id in image_ids)
    ]


def sampling_tables(selected: Sequence[ImageObjects]) -> SamplingTables:
    """Steps 2-3: frequencies, popular order, co-occurrence orders (stable sorts keep first appearance)."""
    freq: Counter[str] = Counter()
    co: dict[str, Counter[str]] = {}
    for im in selected:
        objs = _unique(im.objects)
        freq.update(objs)  # Counter keeps insertion order = first appearance
        for o in objs:
            row = co.setdefault(o, Counter())
            for p in objs:
                if p != o:
                    row[p] += 1
    objects_all = tuple(freq)
    popular = tuple(sorted(objects_all, key=lambda o: -freq[o]))
    adversarial = {o: tuple(sorted(row, key=lambda p, row=row: -row[p])) for o, row in co.items()}
    return SamplingTables(objects_all, dict(freq), popular, adversarial)


def _random_negative(rng: random.Random, objects_all: Sequence[str], excluded: set[str], image: ImageObjects) -> str:
    # The reference redraws until a candidate qualifies and loops forever when none can (§4.2).
    if all(o in excluded for o in objects_all):
        raise NoNegativeError(
            f"no negative object for image {image.image_id} ({image.image}): every one of the "
            f"{len(objects_all)} candidate objects is in the image or already asked"
        )
    while True:
        cand = rng.choice(objects_all)
        if cand not in excluded:
            return cand


def generate_questions(
    images: Iterable[ImageObjects],
    split: str,
    *,
    seed: int = 0,
    num_samples: int = NUM_SAMPLES,
    image_ids: Collection[int] | None = None,
) -> list[GeneratedQuestion]:
    """metrics.md §4.2: yes, no, yes, no, ... per selected image; question ids count from 1."""
    if split not in SPLITS:
        raise ValueError(f"unknown POPE split {split!r}; expected one of {', '.join(SPLITS)}")
    selected = select_images(images, num_samples=num_samples, image_ids=image_ids)
    tables = sampling_tables(selected)
    rng = random.Random(seed)  # one stream for the whole split, created just before step 4
    out: list[GeneratedQuestion] = []
    for im in selected:
        present = set(im.objects)
        positives = _unique(im.objects)[:num_samples]
        history: set[str] = set()
        for positive in positives:
            history.add(positive)
            out.append(GeneratedQuestion(len(out) + 1, im.image_id, im.image, positive, "yes"))
            excluded = history | present
            if split == "popular":
                candidates: Sequence[str] = tables.popular_order
            elif split == "adversarial":
                candidates = tables.adversarial_order.get(positive, ())
            else:
                candidates = ()
            negative = next((c for c in candidates if c not in excluded), None)
            if negative is None:  # random split, or popular/adversarial exhausted: the random rule
                negative = _random_negative(rng, tables.objects_all, excluded, im)
            history.add(negative)
            out.append(GeneratedQuestion(len(out) + 1, im.image_id, im.image, negative, "no"))
    return out


def generate_pope_records(
    images: Iterable[ImageObjects],
    split: str,
    *,
    seed: int = 0,
    num_samples: int = NUM_SAMPLES,
) -> list[dict[str, Any]]:
    """Question-file records `{question_id, image, text, label}` (metrics.md §3.1)."""
    return [q.as_record() for q in generate_questions(images, split, seed=seed, num_samples=num_samples)]
