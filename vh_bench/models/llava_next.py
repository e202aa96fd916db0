"""LLaVA-NeXT (LLaVA-1.6, `LlavaNextForConditionalGeneration`) behind the adapter contract.

Anyres: the image is resized onto the best grid of `image_grid_pinpoints`, cut into tiles of the
vision tower's size, and encoded with a downscaled whole view; the tiles' features are unpadded
to the image's aspect ratio and each feature row ends in a learned newline embedding. The
processor writes one placeholder per resulting feature, so the visual tokens are still one
contiguous run of `<image>` ids (thousands at 7B: 2 144 for a 640×480 COCO image), and every
method that works on LLaVA-1.5's span works here unchanged. What differs is carried by the
adapter: `image_sizes` travels with the pixels (`vision_inputs`), and HALC's views are resized to
the sample's image size so that each view fills the same span.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from PIL import Image

from vh_bench.errors import ConfigError
from vh_bench.models.adapter import ModelInputs, at_sample_size
from vh_bench.models.llava import LlavaAdapter


class LlavaNextAdapter(LlavaAdapter):
    family = "llava_next"
    model_types = ("llava_next",)
    example_hub_id = "llava-hf/llava-v1.6-vicuna-7b-hf"
    vision_input_names = ("image_sizes",)

    @staticmethod
    def model_class() -> Any:
        from transformers import LlavaNextForConditionalGeneration

        return LlavaNextForConditionalGeneration

    @staticmethod
    def check_processor(processor: Any, config: Any, path: str) -> None:
        """The processor must count what the model packs: patch size, strategy, the same grids."""
        wanted = {"patch_size": int(config.vision_config.patch_size),
                  "vision_feature_select_strategy": config.vision_feature_select_strategy}  # fmt: skip
        wrong = [k for k, v in wanted.items() if getattr(processor, k, None) != v]
        pinpoints = [list(p) for p in getattr(processor.image_processor, "image_grid_pinpoints", None) or []]
        if pinpoints != [list(p) for p in config.image_grid_pinpoints]:
            wrong.append("image_grid_pinpoints")
        if wrong:
            raise ConfigError(
                "model.path",
                f"{path}'s processor disagrees with its model config on {', '.join(wrong)}",
                f"set them in processor_config.json as in the model config ({json.dumps(wanted)})",
            )

    def expected_image_tokens(self, image: Image.Image | None = None) -> int:
        """Anyres count for `image` (base view + unpadded tiles + one newline per feature row)."""
        if image is None:
            raise ValueError("LLaVA-NeXT's visual-token count depends on the image")
        size = self.processor.image_processor.crop_size
        side = int(size["height"] if isinstance(size, dict) else size.height)
        n = self.processor._get_number_of_features(image.height, image.width, side, side)
        return n - (self.config.vision_feature_select_strategy == "default")

    def vision_batch(self, images: list[Image.Image], like: ModelInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """HALC's views at the sample's image size: anyres then picks the same grid and the same
        unpadding, so every view yields exactly `like.n_image_tokens` features."""
        enc = self.processor.image_processor(images=at_sample_size(images, like), return_tensors="pt")
        return enc["pixel_values"].to(self.device, self.dtype), {"image_sizes": enc["image_sizes"].to(self.device)}

    def vision_kwargs(self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None) -> dict:
        """`image_sizes` per image in `pixel_values`: one sample's size repeated for VCD's stacked
        pair (clean + noised) of the same image."""
        sizes = (vision_inputs or {}).get("image_sizes")
        if sizes is None:
            raise ValueError("LLaVA-NeXT's vision forward needs image_sizes (ModelInputs.vision_inputs)")
        n = int(pixel_values.shape[0])
        if sizes.shape[0] == 1 and n > 1:
            sizes = sizes.expand(n, -1)
        return {"image_sizes": sizes}
