"""`dataset=scenes` and `dataset=scenes_pope`: the scenes testbed's splits as COCO-format data.

Each split is written once (atomically) under `root/scenes-<hash>/<split>/`: JPEG images, COCO
`instances_scenes_<split>.json` and `captions_scenes_<split>.json` (one caption per image listing
every object, so CHAIR's ground-truth builder sees exactly the drawn objects), and `scenes.jsonl`
with the scene records (objects, cells, sizes). The same config always gives the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.data.captioning import CaptionDataset
from vh_bench.errors import ConfigError, is_int
from vh_bench.records import Sample

GENERATOR_VERSION = 1  # bump when drawing, sampling or annotation rules change
JPEG_QUALITY = 90


def _scenes_config(scenes: dict[str, Any] | None):
    from vh_bench.scenes.splits import ScenesConfig

    try:
        return ScenesConfig(**(scenes or {}))
    except TypeError as exc:
        raise ConfigError("dataset.scenes", f"unknown key ({exc})", "see configs/dataset/scenes.yaml") from None


def _split_key(cfg, split: str) -> str:
    blob = json.dumps([GENERATOR_VERSION, split, asdict(cfg)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def file_name(split: str, image_id: int) -> str:
    return f"scenes_{split}_{image_id:012d}.jpg"


def generate_split(root: Path, cfg, split: str) -> Path:
    """Write one split (once) and return its directory."""
    from vh_bench.data.demo import COCO_CATEGORY_IDS
    from vh_bench.models.tiny_vocab import COCO_CATEGORIES
    from vh_bench.scenes.draw import render
    from vh_bench.scenes.splits import SPLITS, split_scenes
    from vh_bench.scenes.text import caption, caption_order

    if split not in SPLITS:
        raise ConfigError("dataset.split", f"{split!r} is not a scenes split", f"one of {', '.join(SPLITS)}")
    target = root / f"scenes-{_split_key(cfg, split)}" / split
    if (target / "scenes.jsonl").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=split + ".", dir=target.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "annotations").mkdir()
        cat_id = {name: cid for cid, name in zip(COCO_CATEGORY_IDS, COCO_CATEGORIES)}
        cell = cfg.image_size // 3
        images, instances, captions, records = [], [], [], []
        rng = random.Random(f"vh_bench.scenes|captions|{split}")
        for scene in split_scenes(cfg, split):
            name = file_name(split, scene.image_id)
            render(scene).save(tmp / "images" / name, quality=JPEG_QUALITY)
            images.append({"id": scene.image_id, "file_name": name, "width": cfg.image_size, "height": cfg.image_size})
            for o in scene.objects:
                r, c = divmod(o.cell, 3)
                bbox = [float(c * cell + o.dx), float(r * cell + o.dy), float(o.size), float(o.size)]
                instances.append({"id": len(instances) + 1, "image_id": scene.image_id, "category_id": cat_id[o.name],
                                  "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0, "segmentation": []})
            captions.append({"id": len(captions) + 1, "image_id": scene.image_id,
                             "caption": caption(caption_order(scene.names, rng))})
            records.append({"image_id": scene.image_id, "file_name": name,
                            "objects": [asdict(o) for o in scene.objects]})
        info = {"description": f"vh_bench scenes testbed, split {split}", "version": GENERATOR_VERSION,
                "scenes": asdict(cfg)}
        common = {"info": info, "images": images, "licenses": []}
        categories = [{"id": cat_id[n], "name": n, "supercategory": "object"} for n in COCO_CATEGORIES]
        (tmp / "annotations" / f"instances_scenes_{split}.json").write_text(
            json.dumps({**common, "annotations": instances, "categories": categories}))
        (tmp / "annotations" / f"captions_scenes_{split}.json").write_text(json.dumps({**common, "annotations": captions}))
        (tmp / "scenes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "scenes.jsonl").is_file():  # else a concurrent writer won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass(kw_only=True)
class ScenesCaptions(CaptionDataset):
    """CHAIR captioning on one split of the scenes testbed."""

    root: str
    split: str = "test"
    num_images: int | None = None  # the first N scenes of the split (None: all)
    scenes: dict[str, Any] = field(default_factory=dict)
    name: str = "scenes"

    @property
    def config(self):
        return _scenes_config(self.scenes)

    @property
    def data_dir(self) -> Path:
        return generate_split(Path(self.root), self.config, self.split)

    def check(self) -> None:
        if self.num_images is not None and (not is_int(self.num_images) or self.num_images < 1):
            raise ConfigError("dataset.num_images", f"must be an integer >= 1 or null, got {self.num_images!r}")
        self.data_dir  # noqa: B018 - generate now, before any model is loaded
        self.check_scoring("dataset.root")  # the ground truth is built from the split's annotations

    def _images(self) -> list[dict[str, Any]]:
        meta = json.loads((self.data_dir / "annotations" / f"instances_scenes_{self.split}.json").read_text())
        return meta["images"][: self.num_images]

    def samples(self) -> list[Sample]:
        d = self.data_dir
        return [Sample(f"scenes:{im['id']}", d / "images" / im["file_name"], self.prompt, {"image_id": im["id"]})
                for im in self._images()]

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "prompt": self.prompt, "split": self.split, "num_images": self.num_images,
                "generator": GENERATOR_VERSION, "scenes": asdict(self.config)}

    def provenance(self) -> dict[str, Any]:
        return {**self.identity(), "data_dir": str(self.data_dir)}

    def gt_source(self) -> Path:
        return self.data_dir / "annotations"

    def gt_image_ids(self) -> list[int]:
        return [im["id"] for im in self._images()]


def scenes_pope(root: str, scene_split: str = "test", scenes: dict[str, Any] | None = None,
                split: str = "adversarial", **pope_kwargs: Any):
    """`dataset=scenes_pope`: POPE questions generated (metrics.md §4.2 rules) from a scenes split;
    `split` is the POPE split (random | popular | adversarial) as in `dataset=pope`."""
    from vh_bench.data.pope import PopeDataset

    d = generate_split(Path(root), _scenes_config(scenes), scene_split)
    return PopeDataset(name="scenes_pope", source="scenes", split=split,
                       annotations=str(d / "annotations" / f"instances_scenes_{scene_split}.json"),
                       image_dir=str(d / "images"), **pope_kwargs)
