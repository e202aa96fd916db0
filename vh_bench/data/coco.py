"""`dataset=coco`: CHAIR captioning on COCO val2014 (metrics.md §1.1)."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.data.captioning import CaptionDataset
from vh_bench.data.pope_gen import coco_val2014_name, image_id_from_name
from vh_bench.errors import ConfigError
from vh_bench.records import Sample


def read_id_list(path: Path) -> list[int]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError("dataset.image_ids_file", f"{path} is not a text file of image ids") from None
    except OSError as exc:
        raise ConfigError("dataset.image_ids_file", f"cannot read {path}: {exc.strerror}") from None
    ids: list[int] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            ids.append(int(line))
        except ValueError:
            raise ConfigError("dataset.image_ids_file", f"{path}:{lineno}: {line!r} is not an image id") from None
    if len(set(ids)) != len(ids):
        raise ConfigError("dataset.image_ids_file", f"{path} lists duplicate image ids")
    if not ids:
        raise ConfigError("dataset.image_ids_file", f"{path} lists no image ids", "one COCO image id per line")
    return ids


@dataclass(kw_only=True)
class CocoCaptions(CaptionDataset):
    image_dir: str
    image_ids_file: str | None = None
    num_samples: int | None = None
    sample_seed: int = 0
    name: str = "coco"
    _ids: list[int] | None = field(default=None, init=False, repr=False, compare=False)

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
        self.opope_options.check()
        self.image_ids()  # reads and checks the id list
        self.check_scoring("dataset.chair.gt")

    def image_ids(self) -> list[int]:
        # Listed once: identity, samples, provenance and the ground truth all need it, and without
        # an id file it is a glob over the whole val2014 folder (40k files).
        if self._ids is None:
            self._ids = self._list_image_ids()
        return list(self._ids)

    def _list_image_ids(self) -> list[int]:
        if self.image_ids_file is not None:
            return read_id_list(Path(self.image_ids_file))
        names = sorted(p.name for p in Path(self.image_dir).glob("COCO_val2014_*.jpg"))
        all_ids = [image_id_from_name(n) for n in names]
        if self.num_samples > len(all_ids):
            raise ConfigError("dataset.num_samples", f"{self.num_samples} > {len(all_ids)} images in {self.image_dir}")
        return sorted(random.Random(self.sample_seed).sample(all_ids, self.num_samples))

    def samples(self) -> list[Sample]:
        d = Path(self.image_dir)
        return [
            Sample(f"coco:{i}", d / coco_val2014_name(i), self.prompt, {"image_id": i})
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

    def gt_source(self) -> str:
        return str(self.chair["gt"])

    def gt_image_ids(self) -> list[int]:
        return self.image_ids()
