"""Shared fixtures: tiny random LLaVA checkpoints (built once, cached) and a test image."""

from __future__ import annotations

import os

import pytest
import torch

# Triton kernels run interpreted on a CPU (tests/methods/test_vasparse_triton.py). Triton reads the
# flag when it is imported, and transformers imports it: set before anything imports transformers.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from PIL import Image  # noqa: E402

from vh_bench.data.images import two_shapes  # noqa: E402
from vh_bench.models.llava import LlavaAdapter  # noqa: E402
from vh_bench.models.tiny import TinySpec, build_tiny_llava  # noqa: E402
from vh_bench.paths import cache_dir  # noqa: E402

# One thread: the tiny models gain nothing from more, and on a shared 2-core machine extra threads
# spin and slow every test by an order of magnitude.
torch.set_num_threads(1)


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
    """Same weights as `tiny_adapter`, transformers' own eager attention, no vh_attn (reference runs)."""
    return LlavaAdapter.load(tiny_checkpoint(), attn_implementation="eager", stock_attention=True)


@pytest.fixture(scope="session")
def tiny_adapter_sdpa_stock() -> LlavaAdapter:
    """Same weights, transformers' own sdpa attention, no vh_attn (reference for the plain path)."""
    return LlavaAdapter.load(tiny_checkpoint(), attn_implementation="sdpa", stock_attention=True)


@pytest.fixture(scope="session")
def tiny_adapter_explicit() -> LlavaAdapter:
    """Same weights, vh_attn with `runtime.attn_backend=eager`: the plain path is the explicit path."""
    return LlavaAdapter.load(tiny_checkpoint(), attn_implementation="eager")


@pytest.fixture(scope="session")
def test_image() -> Image.Image:
    return two_shapes((320, 240), (40, 120, 200), (30, 40, 150, 200), (170, 60, 300, 190))


@pytest.fixture(scope="session")
def caption_prompt() -> str:
    return "Please describe this image in detail."


@pytest.fixture(scope="module")
def inputs(tiny_adapter, test_image, caption_prompt):
    """The test image with the caption prompt, prepared for the 224-px tiny model."""
    return tiny_adapter.prepare(test_image, caption_prompt)
