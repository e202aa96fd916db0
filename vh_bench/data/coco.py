"""`dataset=coco`: CHAIR captioning on COCO val2014 (metrics.md §1.1)."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.data.captioning import score_captions
from vh_bench.errors import ConfigError
from vh_bench.records import Sample


def read_id_list(path: Path) -> list[int]:
    ids: list[int] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise ConfigError("dataset.image_ids_file", f"{path}:{lineno}: {line!r} is not an image id") from None
    if len(set(ids)) != len(ids):
        raise ConfigError("dataset.image_ids_file", f"{path} lists duplicate image ids")
    return ids


def coco_file_name(image_id: int) -> str:
    return f"COCO_val2014_{image_id:012d}.jpg"


@dataclass
class CocoCaptions:
    image_dir: str
    image_ids_file: str | None = None
    num_samples: int | None = None
    sample_seed: int = 0
    prompt: str = "Please describe this image in detail."
    chair: dict[str, Any] = field(default_factory=dict)
    opope: bool = True
    name: str = "coco"
    task: str = "caption"
    max_new_tokens: int | None = None

    def check(self) -> None:
        d = Path(self.image_dir)
        if not d.is_dir():
            raise ConfigError(
                "dataset.image_dir",
                f"COCO val2014 image directory {d} not found",
                "set paths.coco_root=/path/to/coco (holding val2014/) or dataset.image_dir",
            )
        if self.image_ids_file is not None and not Path(self.image_ids_file).is_file():
            raise ConfigError("dataset.image_ids_file", f"image-id list {self.image_ids_file} not found")
        if self.image_ids_file is None and not self.num_samples:
            raise ConfigError("dataset.num_samples", "give an id list (dataset.image_ids_file) or a sample count")
        gt = self.chair.get("gt")
        if not gt or not Path(gt).exists():
            raise ConfigError("dataset.chair.gt", f"ground truth {gt} not found", "a GT cache file or COCO annotation dir")

    def image_ids(self) -> list[int]:
        if self.image_ids_file is not None:
            return read_id_list(Path(self.image_ids_file))
        names = sorted(p.name for p in Path(self.image_dir).glob("COCO_val2014_*.jpg"))
        all_ids = [int(n.rsplit("_", 1)[1].split(".")[0]) for n in names]
        if self.num_samples > len(all_ids):
            raise ConfigError("dataset.num_samples", f"{self.num_samples} > {len(all_ids)} images in {self.image_dir}")
        return sorted(random.Random(self.sample_seed).sample(all_ids, self.num_samples))

    def samples(self) -> list[Sample]:
        d = Path(self.image_dir)
        return [
            Sample(f"coco:{i}", d / coco_file_name(i), self.prompt, {"image_id": i})
            for i in self.image_ids()
        ]

    def identity(self) -> dict[str, Any]:
        ids = self.image_ids()
        return {
            "name": self.name,
            "prompt": self.prompt,
            "image_ids_sha256": hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest(),
        }

    def provenance(self) -> dict[str, Any]:
        ids = self.image_ids()
        return {**self.identity(), "image_dir": self.image_dir, "image_ids_file": self.image_ids_file, "n_images": len(ids)}

    def score(self, rows: list[dict[str, Any]], selected: Collection[str] | None = None) -> dict[str, Any]:
        # Captioning scores exactly the rows it is given (the runner already applied its selection).
        from vh_bench.metrics.chair import load_ground_truth

        dialect = self.chair.get("dialect", "opera")
        ids = [int(r["image_id"]) for r in rows]
        gt = load_ground_truth(self.chair["gt"], dialect=dialect, image_ids=ids)
        return score_captions(
            rows,
            gt,
            dialect=dialect,
            missing_gt=self.chair.get("missing_gt", "error"),
            synonyms=self.chair.get("synonyms"),
            opope=self.opope,
        )
