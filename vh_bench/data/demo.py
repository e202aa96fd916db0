"""`dataset=demo`: procedurally drawn scenes with COCO-format annotations, generated locally.

No downloaded images: each scene is a few coloured shapes, each labelled with a COCO category, and
`instances_demo.json` + `captions_demo.json` describe them in COCO's format, so the same CHAIR
ground-truth builder and POPE question generator that serve real COCO serve the demo.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

from vh_bench.data.captioning import CaptionDataset
from vh_bench.models.tiny_vocab import COCO_CATEGORIES
from vh_bench.records import Sample

log = logging.getLogger(__name__)

# COCO's category ids run 1..90 with ten gaps.
_COCO_ID_GAPS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_CATEGORY_IDS = [i for i in range(1, 91) if i not in _COCO_ID_GAPS]
GENERATOR_VERSION = 2  # bump when the drawing or annotation rules change (2: ids above COCO's range)
# Demo image ids start far above COCO's (val/test ids are below 600k), so demo captions scored
# against a real COCO ground truth by mistake find no ground truth (an error), never a wrong one.
DEMO_IMAGE_ID_BASE = 10_000_000


def _categories() -> list[dict[str, Any]]:
    return [{"id": cid, "name": name, "supercategory": "object"} for cid, name in zip(COCO_CATEGORY_IDS, COCO_CATEGORIES)]


def _draw_scene(rng: random.Random, width: int, height: int, n_objects: int) -> tuple[Image.Image, list[tuple[int, list[float]]]]:
    bg = tuple(rng.randrange(0, 256) for _ in range(3))
    img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    objects = []
    for cat_index in rng.sample(range(len(COCO_CATEGORIES)), n_objects):
        w = rng.randrange(width // 6, width // 2)
        h = rng.randrange(height // 6, height // 2)
        x = rng.randrange(0, width - w)
        y = rng.randrange(0, height - h)
        colour = tuple(rng.randrange(0, 256) for _ in range(3))
        shape = rng.choice(("rectangle", "ellipse", "triangle"))
        if shape == "rectangle":
            draw.rectangle([x, y, x + w, y + h], fill=colour)
        elif shape == "ellipse":
            draw.ellipse([x, y, x + w, y + h], fill=colour)
        else:
            draw.polygon([(x, y + h), (x + w // 2, y), (x + w, y + h)], fill=colour)
        objects.append((cat_index, [float(x), float(y), float(w), float(h)]))
    return img, objects


def _captions_for(rng: random.Random, names: list[str]) -> list[str]:
    listing = " and ".join(f"a {n}" for n in names)
    return [
        f"A picture of {listing}.",
        f"There is {listing} in this image.",
        f"{listing.capitalize()} on a plain background.",
        f"A simple drawing showing {listing}.",
        f"An image with {', '.join(rng.sample(names, len(names)))}.",
    ]


def generate_demo(root: Path, *, num_images: int = 8, image_size: int = 336, seed: int = 0) -> Path:
    """Write images/ and annotations/ under `root/<hash>` (once; atomic) and return that directory."""
    key = hashlib.sha256(f"{GENERATOR_VERSION}|{num_images}|{image_size}|{seed}".encode()).hexdigest()[:10]
    target = root / f"demo-{key}"
    if (target / "annotations" / "captions_demo.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=root))
    try:
        (tmp / "images").mkdir()
        (tmp / "annotations").mkdir()
        rng = random.Random(seed)
        images, instances, captions = [], [], []
        for k in range(num_images):
            image_id = DEMO_IMAGE_ID_BASE + k
            # Some scenes are not square so the processor's resize + centre crop is exercised.
            width = image_size + (rng.choice((0, 64)) if k % 2 else 0)
            height = image_size
            img, objects = _draw_scene(rng, width, height, rng.randint(2, 4))
            file_name = f"demo_{image_id}.jpg"
            img.save(tmp / "images" / file_name, quality=92)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            for cat_index, bbox in objects:
                instances.append(
                    {
                        "id": len(instances) + 1,
                        "image_id": image_id,
                        "category_id": COCO_CATEGORY_IDS[cat_index],
                        "bbox": bbox,
                        "area": bbox[2] * bbox[3],
                        "iscrowd": 0,
                        "segmentation": [],
                    }
                )
            names = [COCO_CATEGORIES[c] for c, _ in objects]
            for text in _captions_for(rng, names):
                captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": text})
        info = {"description": "vh_bench demo scenes (procedurally generated)", "version": GENERATOR_VERSION}
        common = {"info": info, "images": images, "licenses": []}
        (tmp / "annotations" / "instances_demo.json").write_text(
            json.dumps({**common, "annotations": instances, "categories": _categories()})
        )
        (tmp / "annotations" / "captions_demo.json").write_text(json.dumps({**common, "annotations": captions}))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("demo data written to %s", target)
    return target


@dataclass(kw_only=True)
class DemoCaptions(CaptionDataset):
    """CHAIR captioning on the generated scenes; their annotations are the ground truth."""

    root: str
    num_images: int = 8
    image_size: int = 336
    seed: int = 0
    name: str = "demo"

    @property
    def data_dir(self) -> Path:
        return generate_demo(Path(self.root), num_images=self.num_images, image_size=self.image_size, seed=self.seed)

    def check(self) -> None:
        from vh_bench.errors import ConfigError, is_int

        for key, low in (("num_images", 1), ("image_size", 16)):  # smaller scenes cannot hold their shapes
            if not is_int(getattr(self, key)) or getattr(self, key) < low:
                raise ConfigError(f"dataset.{key}", f"must be an integer >= {low}, got {getattr(self, key)!r}")
        if not is_int(self.seed):
            raise ConfigError("dataset.seed", f"must be an integer, got {self.seed!r}")
        self.opope_options.check()
        self.data_dir  # noqa: B018 - generate now, before any model is loaded
        # The ground truth is built from the generated annotations, which live under paths.demo_dir.
        self.check_scoring("paths.demo_dir")

    def samples(self) -> list[Sample]:
        d = self.data_dir
        meta = json.loads((d / "annotations" / "instances_demo.json").read_text())
        return [
            Sample(f"demo:{im['id']}", d / "images" / im["file_name"], self.prompt, {"image_id": im["id"]})
            for im in meta["images"]
        ]

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "prompt": self.prompt,
            "generator": [GENERATOR_VERSION, self.num_images, self.image_size, self.seed],
        }

    def provenance(self) -> dict[str, Any]:
        return {**self.identity(), "data_dir": str(self.data_dir)}

    def gt_source(self) -> Path:
        return self.data_dir / "annotations"


def demo_pope(
    root: str,
    num_images: int = 12,
    image_size: int = 336,
    seed: int = 0,
    **pope_kwargs: Any,
):
    """`dataset=demo_pope`: POPE questions generated (metrics.md §4.2 rules) from the demo scenes."""
    from vh_bench.data.pope import PopeDataset

    data_dir = generate_demo(Path(root), num_images=num_images, image_size=image_size, seed=seed)
    return PopeDataset(
        name="demo_pope",
        source="demo",
        annotations=str(data_dir / "annotations" / "instances_demo.json"),
        image_dir=str(data_dir / "images"),
        **pope_kwargs,
    )
