"""Shared fixtures: tiny random LLaVA checkpoints (built once, cached) and a test image."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from vh_bench.models.llava import LlavaAdapter
from vh_bench.models.tiny import TinySpec, build_tiny_llava
from vh_bench.paths import cache_dir

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def tiny_checkpoint(**overrides) -> str:
    """Path of a tiny checkpoint; methods.md §8: 224 px (256 image tokens) unless overridden."""
    spec = TinySpec(**{"image_size": 224, **overrides})
    return str(build_tiny_llava(spec, cache_dir() / "models"))


@pytest.fixture(scope="session")
def tiny_adapter() -> LlavaAdapter:
    return LlavaAdapter.load(tiny_checkpoint())


@pytest.fixture(scope="session")
def tiny_adapter_336() -> LlavaAdapter:
    return LlavaAdapter.load(tiny_checkpoint(image_size=336))


@pytest.fixture(scope="session")
def tiny_adapter_eager() -> LlavaAdapter:
    """Same weights as `tiny_adapter`, eager attention in the language model (reference runs)."""
    return LlavaAdapter.load(tiny_checkpoint(), attn_implementation="eager")


@pytest.fixture(scope="session")
def test_image() -> Image.Image:
    img = Image.new("RGB", (320, 240), (40, 120, 200))
    draw = ImageDraw.Draw(img)
    draw.rectangle([30, 40, 150, 200], fill=(220, 30, 30))
    draw.ellipse([170, 60, 300, 190], fill=(250, 220, 40))
    return img


@pytest.fixture(scope="session")
def caption_prompt() -> str:
    return "Please describe this image in detail."
