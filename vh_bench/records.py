"""Records that flow through the harness: config → dataset `Sample` → method `Generation` → line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One unit of work: an image and the task text to ask about it.

    `sample_id` is stable across runs, orderings and shards (it seeds per-sample RNGs and keys
    resume), e.g. "coco:397133" or "pope:coco:v3:random:17". `meta` carries what scoring needs
    (image_id, question_id, label, ...); it is copied onto the sample's output line.
    """

    sample_id: str
    image_path: Path
    prompt: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GenConfig:
    """Decoding settings shared by every method (methods.md §1.4, §9)."""

    strategy: str = "greedy"  # greedy | beam | sample
    max_new_tokens: int = 64
    num_beams: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    length_penalty: float = 1.0
    early_stopping: bool = False


@dataclass
class Generation:
    """What a method returns for one sample."""

    token_ids: list[int]
    text: str
    n_new_tokens: int
    t_prefill_s: float
    t_decode_s: float
    extras: dict[str, Any] = field(default_factory=dict)
    n_image_tokens: int | None = None  # the visual tokens in this sample's prompt (set by the runner)
    kv_cache: Any = None  # vh_bench.decoding.kv_cache.KVBytes at the end of the generation
