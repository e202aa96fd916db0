"""Random-weight LLaVA-NeXT checkpoints built offline (the `model=tiny_llava_next` family builder).

The same vocabulary, tokenizer and Llama text model as `tiny.py`'s LLaVA, with LLaVA-NeXT's vision
side: a small CLIP tower, anyres grids scaled down with it (LLaVA-1.6's pinpoints are 1×2, 2×1,
2×2, 3×1 and 1×3 tiles of 336 px; here tiles of `image_size`), and the learned newline embedding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.models.tiny import IMAGE_TOKEN, TinySpec, build_once, make_processor, make_sub_configs, seeded_model

# LLaVA-1.6's grids in tiles (rows, columns); multiplied by the tile side.
GRID_TILES = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))


@dataclass(frozen=True)
class TinyNextSpec(TinySpec):
    image_size: int = 112  # the tile side: 8×8 = 64 features per tile at patch 14
    grid_tiles: tuple[tuple[int, int], ...] = field(default=GRID_TILES)

    def pinpoints(self) -> list[list[int]]:
        return [[r * self.image_size, c * self.image_size] for r, c in self.grid_tiles]


def make_next_processor(spec: TinyNextSpec):
    from transformers import LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tokenizer = make_processor(spec).tokenizer
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        image_grid_pinpoints=spec.pinpoints(),
    )
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )


def make_next_model(spec: TinyNextSpec, vocab_size: int, image_token_id: int):
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    vision, text = make_sub_configs(spec, vocab_size)  # the same CLIP and Llama configs as tiny LLaVA
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_grid_pinpoints=spec.pinpoints(),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        initializer_range=spec.initializer_range,
    )
    # transformers initialises the newline row from N(0, 1/sqrt(hidden)); drawn here too so the
    # checkpoint never depends on that default.
    return seeded_model(LlavaNextForConditionalGeneration, config, spec.seed,
                        init=lambda m: m.model.image_newline.normal_(0.0, spec.initializer_range))  # fmt: skip


def build_tiny_llava_next(spec: TinyNextSpec, cache_dir: str | os.PathLike) -> Path:
    def make() -> tuple[Any, Any]:
        processor = make_next_processor(spec)
        tok = processor.tokenizer
        image_token_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
        return make_next_model(spec, vocab_size=len(tok), image_token_id=image_token_id), processor

    return build_once(Path(cache_dir) / f"tiny-llava-next-{spec.digest()}", spec, make)


def build_from_dict(spec: dict, cache_dir: str | os.PathLike) -> Path:
    spec = dict(spec)
    if "grid_tiles" in spec:
        spec["grid_tiles"] = tuple(tuple(int(x) for x in t) for t in spec["grid_tiles"])
    return build_tiny_llava_next(TinyNextSpec(**spec), cache_dir)
