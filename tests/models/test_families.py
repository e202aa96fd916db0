"""The model-family registry (vh_bench/models/registry.py) against the model configs."""

from __future__ import annotations

import yaml

from vh_bench.models.registry import FAMILIES
from vh_bench.paths import config_dir


def test_every_family_has_a_tiny_and_a_real_config() -> None:
    """Each registry entry is reachable: a tiny config that builds offline and a real one with a hub id."""
    configs = {p.stem: yaml.safe_load(p.read_text()) for p in (config_dir() / "model").glob("*.yaml")}
    for name, fam in FAMILIES.items():
        mine = {k: c for k, c in configs.items() if c.get("family", "llava") == name}
        assert any(c.get("tiny") for c in mine.values()), name
        assert any(c.get("path") == fam.example_hub_id for c in mine.values()), name
