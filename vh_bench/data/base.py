"""The dataset interface the runner drives. Datasets are built by Hydra from `configs/dataset/*`.

A dataset lists its samples, checks its inputs before any model is loaded, and scores the
per-sample output lines of a run (scoring imports no torch: design.md's one-way data flow).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable
from typing import Any, Protocol, runtime_checkable

from vh_bench.records import Sample


@runtime_checkable
class Dataset(Protocol):
    name: str
    task: str  # "caption" (CHAIR, OPOPE) or "pope" (yes/no questions)

    def check(self) -> None:
        """Raise `vh_bench.errors.ConfigError` for missing/invalid inputs (before model loading)."""

    def samples(self) -> list[Sample]:
        """All samples, in a fixed order; their ids must be unique."""

    def score(self, rows: list[dict[str, Any]], selected: Collection[str] | None = None) -> dict[str, Any]:
        """Task metrics from the run's sample lines (one dict per sample, see runner); `selected`
        is the set of sample ids the run asked for (e.g. the first N under runtime.limit)."""

    def identity(self) -> dict[str, Any]:
        """What selects the samples and prompts (enters the run fingerprint; no local paths)."""

    def provenance(self) -> dict[str, Any]:
        """How the data was made: file paths, sha256s, versions, id lists."""


def select_samples(dataset: Dataset, limit: int | None) -> list[Sample]:
    """The dataset's samples (ids checked unique), the first `limit` of them if set (runtime.limit).

    Torch-free, so `score run` selects exactly what the runner selected without loading a model."""
    from vh_bench.errors import ConfigError

    samples = dataset.samples()
    ids = [s.sample_id for s in samples]
    if len(set(ids)) != len(ids):
        raise ConfigError("dataset", "sample ids are not unique")
    if limit is not None:
        samples = samples[: int(limit)]
    if not samples:
        # An empty id list or question file would otherwise end "complete" with nothing scored.
        raise ConfigError("dataset", f"{dataset.name} selects no samples", "check its id list or question file")
    return samples


def selection_digest(sample_ids: Iterable[str]) -> dict[str, Any]:
    """How many samples a run asked for and a sha256 of their sorted ids (recorded in results.json;
    `score run` refuses to rescore a selection that is not the one recorded)."""
    ids = sorted(set(sample_ids))
    return {"n": len(ids), "sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
