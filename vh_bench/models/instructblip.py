"""InstructBLIP (`InstructBlipForConditionalGeneration`, Vicuna) behind the adapter contract.

A BLIP ViT encodes the image; a Q-Former turns it into `num_query_tokens` (32) query outputs while
reading the instruction text too (`qformer_input_ids`, its own BERT tokenizer); a linear
projection makes them the language model's visual tokens. The processor puts the 32 `<image>`
placeholders at the very start of the prompt, before BOS (as LAVIS's training did), so the visual
tokens are one contiguous run at position 0, whatever the image size.

What differs from LLaVA and is carried here:
- layout: the language model is a whole `LlamaForCausalLM` (`model.language_model`), so the decoder
  stack is `model.language_model.model` and `lm_head` is the causal LM's;
- the Q-Former's text travels in `ModelInputs.vision_inputs` (never noised) and is repeated for
  stacked images (VCD's pair, HALC's views);
- transformers' forward always runs the vision side (`pixel_values` is required, even with a
  cache), so `forward` writes the projected queries into the embeddings itself and calls the
  language model: the same arithmetic as `InstructBlipForConditionalGeneration.forward`
  (embeddings, `masked_scatter` of the query outputs into the placeholders, the causal LM), which
  the tests compare against;
- no chat template: the instruction is the prompt (preset `instructblip` = `<image>{prompt}`).
"""

from __future__ import annotations

import json
from typing import Any

import torch
from PIL import Image

from vh_bench.errors import ConfigError
from vh_bench.models import templates
from vh_bench.models.adapter import ModelInputs
from vh_bench.models.llava import LlavaAdapter

IMAGE_PLACEHOLDER = "<image>"
QFORMER_INPUTS = ("qformer_input_ids", "qformer_attention_mask")


def check_template(template: str) -> str:
    """The literal template; InstructBLIP's processor places the query tokens first, so `<image>`
    must open the template (text before it would silently move behind the image)."""
    text = templates.resolve_template(template)
    if not text.startswith(IMAGE_PLACEHOLDER):
        raise ConfigError(
            "model.prompt_template",
            f"{template!r} does not begin with {IMAGE_PLACEHOLDER}: InstructBLIP's query tokens always open the prompt",
            "use prompt_template=instructblip",
        )
    return text


class InstructBlipAdapter(LlavaAdapter):
    family = "instructblip"
    model_types = ("instructblip",)
    example_hub_id = "Salesforce/instructblip-vicuna-7b"
    vision_input_names = QFORMER_INPUTS

    def __init__(self, model: Any, processor: Any, *, prompt_template: str = "instructblip",
                 name: str = "instructblip", attn_backend: str | None = None) -> None:  # fmt: skip
        _image_token_as_added_token(processor)
        super().__init__(model, processor, prompt_template=prompt_template, name=name, attn_backend=attn_backend)

    def resolve_layout(self, model: Any) -> None:
        causal_lm = model.language_model  # LlamaForCausalLM
        self.causal_lm = causal_lm
        self.language_model = causal_lm.model  # the decoder stack: layers, norm, rotary, embeddings
        self.vision_tower = model.vision_model
        self.qformer = model.qformer
        self.projector = model.language_projection
        self.lm_head = causal_lm.lm_head

    @staticmethod
    def check_template(template: str) -> str:
        return check_template(template)

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str, *, prompt_template: str = "instructblip", name: str = "instructblip", **kwargs: Any):
        """LlavaAdapter.load (vh_attn on the language model only; the vision tower sdpa, the
        Q-Former transformers' default, sdpa) with this family's default template."""
        return super().load(path, prompt_template=prompt_template, name=name, **kwargs)

    @staticmethod
    def model_class() -> Any:
        from transformers import InstructBlipForConditionalGeneration

        return InstructBlipForConditionalGeneration

    @staticmethod
    def check_processor(processor: Any, config: Any, path: str) -> None:
        """The processor must write as many placeholders as the Q-Former has queries, with the id
        the model scatters into (an older snapshot without `num_query_tokens` writes none)."""
        _image_token_as_added_token(processor)
        wanted = int(config.num_query_tokens)
        got = getattr(processor, "num_query_tokens", None)
        problems = []
        if got != wanted:
            problems.append(f"num_query_tokens={got!r} (the model has {wanted} queries)")
        token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token.content)
        if config.image_token_index is None or token_id != int(config.image_token_index):
            problems.append(f"image token id {token_id} (the model's image_token_index is {config.image_token_index})")
        if getattr(processor, "qformer_tokenizer", None) is None:
            problems.append("no qformer_tokenizer")
        if problems:
            fix = json.dumps({"num_query_tokens": wanted, "processor_class": "InstructBlipProcessor"})
            raise ConfigError(
                "model.path",
                f"{path}'s processor disagrees with its model: {'; '.join(problems)}",
                f"use a current snapshot, or set processor_config.json to {fix}",
            )

    @property
    def attn_setting(self) -> str:
        qformer = self.config.qformer_config._attn_implementation
        return f"{super().attn_setting},qformer={qformer}"

    # ---- inputs --------------------------------------------------------------------------
    def model_text(self, rendered: str) -> str:
        """The text both tokenizers read: the rendered template without its leading placeholder
        (the processor writes the query placeholders itself)."""
        return rendered[len(IMAGE_PLACEHOLDER) :]

    def prepare(self, image: Image.Image, prompt: str) -> ModelInputs:
        """Template → processor (LLM ids with the 32 placeholders first, Q-Former ids, pixels)."""
        text = self.render_prompt(prompt)
        enc = self.processor(images=image, text=self.model_text(text), return_tensors="pt")
        input_ids = enc["input_ids"].to(self.device)
        pixel_values = enc["pixel_values"].to(self.device, self.dtype)
        vision_inputs = {k: enc[k].to(self.device) for k in self.vision_input_names}
        start, n = self.image_span(input_ids, self.expected_image_tokens(image))
        return ModelInputs(input_ids, pixel_values, start, n, text, image, vision_inputs)

    def expected_image_tokens(self, image: Image.Image | None = None) -> int:
        """The Q-Former's query count: fixed, whatever the image."""
        return int(self.config.num_query_tokens)

    def vision_batch(self, images: list[Image.Image], like: ModelInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """HALC's views: each resized to the ViT's square input gives the same 32 queries; the
        Q-Former reads the sample's instruction for every view."""
        pixels = self.vision_pixels(images)
        return pixels, self.vision_kwargs(pixels, like.vision_inputs)

    def vision_kwargs(self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None) -> dict:
        """The Q-Former's text inputs, one row per image in `pixel_values` (a sample's single row
        repeated for VCD's stacked pair and HALC's views)."""
        vision_inputs = vision_inputs or {}
        if "qformer_input_ids" not in vision_inputs:
            raise ValueError("InstructBLIP's vision forward needs qformer_input_ids (ModelInputs.vision_inputs)")
        n = int(pixel_values.shape[0])
        out = {}
        for key in QFORMER_INPUTS:
            value = vision_inputs.get(key)
            if value is None:
                continue
            if value.shape[0] == 1 and n > 1:
                value = value.expand(n, -1)
            elif value.shape[0] != n:
                raise ValueError(f"{key} has {value.shape[0]} rows for {n} images")
            out[key] = value
        return out

    # ---- model calls ---------------------------------------------------------------------
    def forward(
        self,
        *,
        cache: Any,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        vision_inputs: dict[str, torch.Tensor] | None = None,
    ) -> Any:
        """One forward of the language model (rows = beams/branches), the queries scattered in
        when `pixel_values` is given; decode steps feed ids only. Raises if the cache was ignored."""
        if inputs_embeds is None and pixel_values is not None:
            inputs_embeds = self._embed_with_images(input_ids, pixel_values, vision_inputs)
        return self.cached_call(
            self.causal_lm,
            cache,
            input_ids=input_ids if inputs_embeds is None else None,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
        )

    def _embed_with_images(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        """Token embeddings of `input_ids (rows, L)` with each row's placeholders replaced by the
        projected queries of its image (`pixel_values` has one image per row, or one for all)."""
        embeds = self.embed_tokens(input_ids)
        feats = self._query_features(pixel_values, vision_inputs)  # (images, n_query, hidden)
        rows = int(input_ids.shape[0])
        if feats.shape[0] == 1 and rows > 1:
            feats = feats.expand(rows, -1, -1)
        if feats.shape[0] != rows:
            raise ValueError(f"{feats.shape[0]} images for {rows} prompt rows")
        mask = (input_ids == self.image_token_id).unsqueeze(-1).expand_as(embeds)
        return embeds.masked_scatter(mask, feats.to(embeds.dtype))

    def _query_features(self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None) -> torch.Tensor:
        out = self.model.get_image_features(
            pixel_values=pixel_values, **self.vision_kwargs(pixel_values, vision_inputs), return_dict=True
        )
        return out.pooler_output

    def image_features(
        self, pixel_values: torch.Tensor, vision_inputs: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Projected query outputs (images · n_query, hidden): the visual tokens' embeddings."""
        feats = self._query_features(pixel_values, vision_inputs)
        return feats.reshape(-1, feats.shape[-1])


def _image_token_as_added_token(processor: Any) -> None:
    """InstructBlipProcessor expects `image_token` as an AddedToken (it reads `.content`); a
    tokenizer that declares `image_token` as a plain string hands it over as a str. Normalise."""
    token = getattr(processor, "image_token", None)
    if isinstance(token, str):
        from tokenizers import AddedToken

        processor.image_token = AddedToken(token, normalized=False, special=True)
