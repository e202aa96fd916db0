"""The dataset interface the runner drives. Datasets are built by Hydra from `configs/dataset/*`.

A dataset lists its samples, checks its inputs before any model is loaded, and scores the
per-sample output lines of a run (scoring imports no torch: design.md's one-way data flow).
"""

from __future__ import annotations

from collections.abc import Collection
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
