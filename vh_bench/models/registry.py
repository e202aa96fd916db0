"""Model families: the config's `model.family` → its adapter, its checkpoint type, its tiny builder.

Torch-free at import (preflight validates `model.family` before torch loads); the adapter and the
builder modules are imported only when a run loads its model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vh_bench.errors import ConfigError
from vh_bench.models.pixels import PIXEL_KEYS


@dataclass(frozen=True)
class Family:
    """One model family behind the adapter contract (vh_bench/models/adapter.py)."""

    name: str
    model_types: tuple[str, ...]  # config.json `model_type` values this adapter loads
    adapter: str  # "module:Class" implementing the contract, with a `load(path, **kw)` classmethod
    tiny_builder: str  # "module:function(spec_dict, root) -> Path" of a random offline checkpoint
    example_hub_id: str  # named in one-line errors
    # `model.*` keys the adapter's `load` takes as keywords (processor settings such as Qwen2.5-VL's
    # pixel limits); part of the run's identity when set.
    load_keys: tuple[str, ...] = ()
    # "module:function(options dict)" that checks those keys torch-free (preflight), raising ConfigError.
    option_check: str = ""

    def adapter_class(self) -> Any:
        return _resolve(self.adapter)

    def check_options(self, options: dict[str, Any]) -> None:
        if self.option_check:
            _resolve(self.option_check)(options)

    def build_tiny(self, spec: dict[str, Any], root: Path) -> Path:
        return _resolve(self.tiny_builder)(spec, root)


def _resolve(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


FAMILIES: dict[str, Family] = {
    "llava": Family(
        name="llava",
        model_types=("llava",),
        adapter="vh_bench.models.llava:LlavaAdapter",
        tiny_builder="vh_bench.models.tiny:build_from_dict",
        example_hub_id="llava-hf/llava-1.5-7b-hf",
    ),
    "llava_next": Family(
        name="llava_next",
        model_types=("llava_next",),
        adapter="vh_bench.models.llava_next:LlavaNextAdapter",
        tiny_builder="vh_bench.models.tiny_next:build_from_dict",
        example_hub_id="llava-hf/llava-v1.6-vicuna-7b-hf",
    ),
    "instructblip": Family(
        name="instructblip",
        model_types=("instructblip",),
        adapter="vh_bench.models.instructblip:InstructBlipAdapter",
        tiny_builder="vh_bench.models.tiny_instructblip:build_from_dict",
        example_hub_id="Salesforce/instructblip-vicuna-7b",
    ),
    "qwen2_5_vl": Family(
        name="qwen2_5_vl",
        model_types=("qwen2_5_vl",),
        adapter="vh_bench.models.qwen2_5_vl:Qwen2_5_VLAdapter",
        tiny_builder="vh_bench.models.tiny_qwen2_5_vl:build_from_dict",
        example_hub_id="Qwen/Qwen2.5-VL-7B-Instruct",
        load_keys=PIXEL_KEYS,
        option_check="vh_bench.models.pixels:check_pixels",
    ),
}


def family(name: str | None) -> Family:
    """The family named by `model.family` (absent: llava, the configs written before families)."""
    key = "llava" if name is None else str(name)
    if key not in FAMILIES:
        raise ConfigError("model.family", f"{key!r} is not one of {', '.join(sorted(FAMILIES))}")
    return FAMILIES[key]


def load_options(fam: Family, model_cfg: Any) -> dict[str, Any]:
    """The family's `load_keys` that `model_cfg` (the `model` config block) sets, as plain values."""
    return {k: model_cfg.get(k) for k in fam.load_keys if model_cfg.get(k) is not None}


def family_of_type(model_type: str | None) -> Family | None:
    """The family whose adapter loads checkpoints of `model_type`, if any."""
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)
