"""Per-sample seeds (methods.md §1.7): order, sharding and resumption never change a sample's output."""

from __future__ import annotations

import hashlib
import random

import torch

PURPOSES = ("sample", "vcd_noise", "svcd_mask", "halc_skip", "halc_select")


def seed_for(run_seed: int, sample_id: str, purpose: str) -> int:
    """First 8 bytes of sha256("{run_seed}|{sample_id}|{purpose}"), little-endian, masked to 63 bits."""
    if purpose not in PURPOSES:
        raise ValueError(f"unknown seed purpose {purpose!r}; one of {PURPOSES}")
    digest = hashlib.sha256(f"{run_seed}|{sample_id}|{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class SampleSeeds:
    """The seeds of one sample. Methods ask for a generator per purpose; no global RNG is touched."""

    def __init__(self, run_seed: int, sample_id: str) -> None:
        self.run_seed = run_seed
        self.sample_id = sample_id

    def torch_generator(self, purpose: str) -> torch.Generator:
        g = torch.Generator(device="cpu")
        g.manual_seed(seed_for(self.run_seed, self.sample_id, purpose))
        return g

    def python_rng(self, purpose: str) -> random.Random:
        return random.Random(seed_for(self.run_seed, self.sample_id, purpose))
