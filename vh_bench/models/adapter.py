"""The adapter contract: everything a method may ask of a model (methods.md §1.1–1.2).

Methods, branches and the runner talk to a model only through this surface; each model family
(`vh_bench/models/registry.py`) is one small module that implements it over transformers' own
classes, loaded with `from_pretrained` and `trust_remote_code=False`. Methods never ask which family
they run on: where a family cannot serve a method, the family says so at planning
(`Adapter.refuse`), in one line naming the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from PIL import Image


@dataclass
class ModelInputs:
    """A prepared sample: token ids with the image placeholder expanded, pixels, the image positions.

    `image_start`/`n_image_tokens` describe the visual tokens as one contiguous run, which every
    family shipped so far has for a single image (LLaVA-NeXT's tiles and newline rows and
    Qwen2.5-VL's merged patches are one run of placeholder tokens). `image_positions` is the general
    form (a sorted index, not a range); a family whose tokens are not contiguous must refuse the
    methods that need a run.
    """

    input_ids: torch.Tensor  # (1, L) long
    pixel_values: torch.Tensor  # the vision tower's input in the model dtype (layout is the family's)
    image_start: int
    n_image_tokens: int
    prompt_text: str  # the rendered template, recorded in results
    image: Image.Image | None = field(default=None, repr=False)  # for methods that crop (HALC)
    # Further tensors the family's vision forward needs beside pixel_values (LLaVA-NeXT's
    # image_sizes, Qwen2.5-VL's image_grid_thw, InstructBLIP's qformer_input_ids). Never noised.
    vision_inputs: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    # A family's own prompt positions, computed once at `prepare` (Qwen2.5-VL: the (3, 1, L) M-RoPE
    # positions and the text offset after the image); None where positions are 0 … L−1.
    rope_positions: tuple[torch.Tensor, int] | None = field(default=None, repr=False)

    @property
    def length(self) -> int:
        return int(self.input_ids.shape[1])

    @property
    def image_positions(self) -> torch.Tensor:
        """Sorted prompt positions of the visual tokens (long, on the ids' device)."""
        return torch.arange(self.image_start, self.image_start + self.n_image_tokens, device=self.input_ids.device)


def at_sample_size(images: list[Image.Image], like: ModelInputs) -> list[Image.Image]:
    """HALC's views resized to the sample's image size: a family whose visual-token count depends
    on the image size (LLaVA-NeXT's anyres, Qwen2.5-VL's dynamic resolution) then gives every view
    the sample's grid, so each fills `like`'s image span."""
    if like.image is None:
        raise ValueError("views need ModelInputs.image (the sample's size)")
    size = like.image.size
    return [im if im.size == size else im.resize(size, Image.BICUBIC) for im in images]


@runtime_checkable
class Adapter(Protocol):
    """What `LlavaAdapter` owns, made explicit. Attributes and calls used by methods and the runner."""

    family: str  # the registry key ("llava", …), recorded in results.json
    name: str
    model: Any
    processor: Any
    tokenizer: Any
    config: Any
    n_layers: int
    eos_token_id: int
    unk_token_id: int | None
    image_token_id: int

    # ---- modules (resolved once at load) ----
    @property
    def device(self) -> torch.device: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def layers(self) -> torch.nn.ModuleList: ...
    @property
    def final_norm(self) -> torch.nn.Module: ...
    @property
    def embed_tokens(self) -> torch.nn.Module: ...
    @property
    def attn_setting(self) -> str: ...

    language_model: Any  # the decoder stack (config, rotary embedding) for early-exit streams
    lm_head: torch.nn.Module

    def attention_modules(self) -> list[torch.nn.Module]: ...
    def register_layer_pre_hook(self, layer_idx: int, hook: Any) -> Any: ...

    # ---- inputs ----
    def render_prompt(self, prompt: str) -> str: ...
    def prepare(self, image: Image.Image, prompt: str) -> ModelInputs: ...
    def vision_pixels(self, images: list[Image.Image]) -> torch.Tensor: ...
    def vision_batch(self, images: list[Image.Image], like: ModelInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Rows of pixels (and their vision inputs) that each fill `like`'s image span (HALC's views)."""
        ...
    def vision_kwargs(self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None) -> dict: ...
    def expected_image_tokens(self, image: Image.Image | None = None) -> int: ...
    def rope_position_ids(self, inputs: ModelInputs, index: torch.Tensor) -> torch.Tensor:
        """Rotary positions of sequence indices `index (rows, q)` of a stream that starts with `inputs`'
        prompt, for early-exit streams that drop tokens (layer_prefix.py): `index` itself for 1-D
        RoPE, `(3, rows, q)` for Qwen2.5-VL's M-RoPE."""
        ...

    # ---- model calls ----
    def new_cache(self) -> Any: ...
    def forward(
        self,
        *,
        cache: Any,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        vision_inputs: dict[str, torch.Tensor] | None = None,
    ) -> Any: ...
    def last_logits(self, out: Any) -> torch.Tensor: ...
    def image_features(
        self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor: ...
    def build_inputs_embeds(self, inputs: ModelInputs, pixel_values: torch.Tensor | None = None) -> torch.Tensor: ...
    def decode_text(self, token_ids: list[int]) -> str: ...

    # ---- planning ----
    @classmethod
    def refuse(cls, method: Any) -> str | None:
        """At planning, before any weights load: None when `method` (a configured
        `vh_bench.decoding.method.Method`) can run on this family, else the one-line reason."""
        ...
