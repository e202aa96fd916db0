"""Qwen2.5-VL (`Qwen2_5_VLForConditionalGeneration`) behind the adapter contract.

Dynamic resolution: the processor resizes the image so both sides are multiples of
patch·merge (28 px) with the pixel count inside [min_pixels, max_pixels], cuts it into 14-px
patches (flattened: `pixel_values` is `(n_patches, C·T·P·P)`, a still image counted as T = 2
identical frames) and reports `image_grid_thw`; the vision tower merges 2×2 patches, so an image
yields t·h·w / merge² visual tokens, one contiguous run of `<|image_pad|>` between
`<|vision_start|>` and `<|vision_end|>`. The pixel limits come from the model config
(`model.min_pixels` / `model.max_pixels`) so runs are comparable.

Positions: Qwen2.5-VL's M-RoPE gives each token three position ids (temporal, height, width;
text tokens have three equal ones) and transformers keeps the text offset after the image
(`rope_deltas`) as state on the model object, which VCD's contrast, HALC's views and beams sharing
one model would overwrite. The adapter owns positions instead: at a prefill it computes them with
the model's own `get_rope_index` and passes them explicitly; the offset is kept on the cache of
that stream (`ROPE_DELTA`); every later forward on that cache passes `cache length + offset` for
all three rows. FastV's physical pruning keeps layer 0 at the full length, so the cache length
keeps counting original positions. Positions go in as 3 rows (temporal, height, width):
transformers 5.25's text model also takes 4 (text positions first, for packed sequences, as
`generate` builds them), but with 3 it derives the causal mask from the cache alone, which is what
the harness's unpadded batch-1 streams need. The decoder layers then see (cos, sin) of shape
(rows, L, head_dim), the three sections already interleaved, and no position_ids, so FastV's
pruning hook slices them like Llama's.

What the methods see: VCD noises `pixel_values` as they are, i.e. the *normalised flattened patch
values* (each of the two temporal copies of a patch gets its own noise draw), and its batched pair
concatenates the clean and noised patches on dim 0 (`vision_kwargs` repeats the grid). HALC's views
are resized to the sample's image size, so each yields the sample's grid and fills its span.

Processor: transformers' `Qwen2_5_VLProcessor` also owns a video processor, and without
torchvision transformers 5.25 cannot build it at all (`AutoProcessor.from_pretrained` fails on every
Qwen2.5-VL checkpoint). The adapter loads the checkpoint's tokenizer and its `preprocessor_config.json` into
Qwen2-VL's PIL image processor and joins them in an image-and-text subclass of that processor,
with transformers' own placeholder expansion.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

import torch
from PIL import Image
from transformers import Qwen2_5_VLProcessor

from vh_bench.errors import ConfigError
from vh_bench.models.adapter import ModelInputs, at_sample_size
from vh_bench.models.llava import LlavaAdapter
from vh_bench.models.pixels import check_pixels

IMAGE_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"  # what the template's `<image>` becomes
ROPE_DELTA = "vh_rope_delta"  # cache attribute: M-RoPE text offset of the stream that cache holds


class Qwen2_5_VLImageTextProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` with its image processor and tokenizer only (no video processor, which
    needs torchvision); text expansion, `image_grid_thw` and `mm_token_type_ids` are its own."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs) -> None:
        super().__init__(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)


class Qwen2_5_VLAdapter(LlavaAdapter):
    family = "qwen2_5_vl"
    model_types = ("qwen2_5_vl",)
    example_hub_id = "Qwen/Qwen2.5-VL-7B-Instruct"
    vision_input_names = ("image_grid_thw",)

    def __init__(self, model: Any, processor: Any, *, prompt_template: str = "qwen", name: str = "qwen2_5_vl",
                 attn_backend: str | None = None) -> None:  # fmt: skip
        super().__init__(model, processor, prompt_template=prompt_template, name=name, attn_backend=attn_backend)
        self.prompt_template = self.prompt_template.replace("<image>", IMAGE_BLOCK)
        if self.unk_token_id is None:
            # Byte-level BPE has no <unk>. HALC's deleted-word placeholders (methods.md §7.7) need an id
            # that is no word: the pad token <|endoftext|>, which decode_text drops as special.
            self.unk_token_id = self.tokenizer.pad_token_id
        self.merge_size = int(model.config.vision_config.spatial_merge_size)
        self.patch_size = int(model.config.vision_config.patch_size)
        # transformers 5.2x's get_rope_index takes the token types; earlier ones find <|vision_start|>.
        self._rope_takes_token_types = "mm_token_type_ids" in inspect.signature(model.model.get_rope_index).parameters

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str, *, min_pixels: int | None = None, max_pixels: int | None = None,
             prompt_template: str = "qwen", **kwargs: Any) -> "Qwen2_5_VLAdapter":  # fmt: skip
        """`LlavaAdapter.load` with the pixel limits for the processor (None: the checkpoint's own)."""
        options = check_pixels({"min_pixels": min_pixels, "max_pixels": max_pixels})
        return super().load(path, prompt_template=prompt_template, processor_options=options, **kwargs)

    @staticmethod
    def model_class() -> Any:
        from transformers import Qwen2_5_VLForConditionalGeneration

        return Qwen2_5_VLForConditionalGeneration

    @staticmethod
    def load_processor(path: str, **options: Any) -> Any:
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, **options)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        return Qwen2_5_VLImageTextProcessor(image_processor=image_processor, tokenizer=tokenizer)

    @staticmethod
    def check_processor(processor: Any, config: Any, path: str) -> None:
        """Patching and the placeholder id must be the model's, else the counts disagree."""
        ip, vc = processor.image_processor, config.vision_config
        wanted = {"patch_size": int(vc.patch_size), "merge_size": int(vc.spatial_merge_size),
                  "temporal_patch_size": int(vc.temporal_patch_size)}  # fmt: skip
        wrong = [k for k, v in wanted.items() if getattr(ip, k, None) != v]
        if processor.image_token_id != config.image_token_id:
            wrong.append(f"image token id ({processor.image_token_id} vs {config.image_token_id})")
        if wrong:
            raise ConfigError(
                "model.path",
                f"{path}'s processor files disagree with its model config on {', '.join(wrong)}",
                f"set them in preprocessor_config.json as in the model config ({json.dumps(wanted)})",
            )

    def resolve_layout(self, model: Any) -> None:
        inner = model.model
        self.language_model = inner.language_model
        self.vision_tower = inner.visual
        self.projector = inner.visual.merger  # the 2×2 patch merger is Qwen's projector
        self.lm_head = model.lm_head

    # ---- inputs --------------------------------------------------------------------------
    def expected_image_tokens(self, image: Image.Image | None = None) -> int:
        """t·h·w / merge² of the grid that smart resizing gives `image` (t = 1 for a still image)."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        if image is None:
            raise ValueError("Qwen2.5-VL's visual-token count depends on the image")
        size = self.processor.image_processor.size
        factor = self.patch_size * self.merge_size
        h, w = smart_resize(image.height, image.width, factor, size.shortest_edge, size.longest_edge)
        return (h // self.patch_size) * (w // self.patch_size) // self.merge_size**2

    def vision_batch(self, images: list[Image.Image], like: ModelInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """HALC's views resized to the sample's image size: the same grid, so each view fills
        `like`'s image span; the patches of all views are concatenated (Qwen's flat layout)."""
        enc = self.processor.image_processor(images=at_sample_size(images, like), return_tensors="pt")
        grid = enc["image_grid_thw"].to(self.device)
        want = like.vision_inputs["image_grid_thw"].to(self.device)
        if not torch.equal(grid, want.expand(len(images), -1)):
            raise ValueError(f"views got grids {grid.tolist()}, not the sample's {want.tolist()}")
        return enc["pixel_values"].to(self.device, self.dtype), {"image_grid_thw": grid}

    def vision_kwargs(self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None) -> dict:
        """`image_grid_thw` per image in the flat `pixel_values`: one sample's grid repeated when the
        rows hold several copies of its image (VCD's clean + noised pair concatenated on dim 0)."""
        grid = (vision_inputs or {}).get("image_grid_thw")
        if grid is None:
            raise ValueError("Qwen2.5-VL's vision forward needs image_grid_thw (ModelInputs.vision_inputs)")
        n = int(pixel_values.shape[0])
        per = int(grid.prod(-1).sum())
        if per != n:
            if grid.shape[0] != 1 or n % per:
                raise ValueError(f"{n} patches do not fit the grids {grid.tolist()}")
            grid = grid.repeat(n // per, 1)
        return {"image_grid_thw": grid}

    @classmethod
    def refuse(cls, method: Any) -> str | None:
        """None: the adapter supplies M-RoPE positions to every stream (layer_prefix included)."""
        return None

    # ---- positions -----------------------------------------------------------------------
    def prompt_positions(
        self, input_ids: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, int]:
        """((3, rows, L) M-RoPE positions, text offset after the image) of sequences starting at 0,
        from the model's own `get_rope_index`. Every row holds the same sample (beams, VCD's pair,
        HALC's views), so one offset serves the stream."""
        is_image = input_ids == self.image_token_id
        rows, length = input_ids.shape
        if not bool(is_image.any()):
            pos = torch.arange(length, device=input_ids.device).view(1, 1, -1).expand(3, rows, -1)
            return pos, 0
        grid = (vision_inputs or {}).get("image_grid_thw")
        if grid is None:
            raise ValueError("Qwen2.5-VL's positions need image_grid_thw (pass vision_inputs=inputs.vision_inputs)")
        grid = grid.to(input_ids.device)
        if grid.shape[0] == 1 and rows > 1:
            grid = grid.repeat(rows, 1)
        get_rope_index = self.model.model.get_rope_index
        kwargs: dict[str, Any] = {"image_grid_thw": grid}
        if self._rope_takes_token_types:
            kwargs["mm_token_type_ids"] = is_image.int()
        pos, deltas = get_rope_index(input_ids, **kwargs)
        if not bool((deltas == deltas[0]).all()):
            raise ValueError(f"rows of one stream have different M-RoPE offsets {deltas.flatten().tolist()}")
        return pos, int(deltas[0])

    def position_kwargs(
        self, cache: Any, input_ids: torch.Tensor | None, vision_inputs: dict[str, torch.Tensor] | None
    ) -> dict:
        """Explicit `position_ids (3, rows, q)`: the prompt's at a prefill (offset kept on `cache`),
        `cache length + arange(q) + offset` on all three rows after it."""
        if input_ids is None:
            raise ValueError("Qwen2.5-VL's forward needs input_ids to place M-RoPE positions")
        past = cache.get_seq_length()
        if past == 0:
            pos, delta = self.prompt_positions(input_ids, vision_inputs)
            setattr(cache, ROPE_DELTA, delta)
            return {"position_ids": pos}
        delta = getattr(cache, ROPE_DELTA, None)
        if delta is None:
            raise RuntimeError("this cache was not prefilled through the Qwen2.5-VL adapter (no M-RoPE offset)")
        rows, q = input_ids.shape
        pos = torch.arange(past + delta, past + delta + q, device=input_ids.device)
        return {"position_ids": pos.view(1, 1, q).expand(3, rows, q)}

    def prepare(self, image: Image.Image, prompt: str) -> ModelInputs:
        """`LlavaAdapter.prepare`, with the prompt's M-RoPE positions computed once (early-exit
        streams read them at every decode step)."""
        inputs = super().prepare(image, prompt)
        inputs.rope_positions = self.prompt_positions(inputs.input_ids, inputs.vision_inputs)
        return inputs

    def rope_position_ids(self, inputs: ModelInputs, index: torch.Tensor) -> torch.Tensor:
        """(3, rows, q): the prompt's M-RoPE positions at prompt indices, `index + offset` past them."""
        pos, delta = inputs.rope_positions or self.prompt_positions(inputs.input_ids, inputs.vision_inputs)
        index = index.to(pos.device)
        table = pos[:, 0, index.clamp(max=inputs.length - 1)]  # (3, rows, q)
        return torch.where(index < inputs.length, table, index + delta)

    # ---- model calls ---------------------------------------------------------------------
    def image_features(
        self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Merged visual tokens (n_img, hidden) of every image in `pixel_values`, in order."""
        out = self.model.model.get_image_features(pixel_values, **self.vision_kwargs(pixel_values, vision_inputs))
        feats = out.pooler_output if hasattr(out, "pooler_output") else out
        if isinstance(feats, (list, tuple)):
            feats = torch.cat(list(feats), dim=0)
        return feats.reshape(-1, feats.shape[-1])
