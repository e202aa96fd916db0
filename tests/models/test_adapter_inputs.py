"""Adapter facts the attention layer and the pruning methods rely on (methods.md §1.2, §1.5, §8.1)."""

from __future__ import annotations

import pytest
import torch

from tests.stepping import TOL
from vh_bench.errors import ConfigError
from vh_bench.models import templates
from vh_bench.models.llava import LlavaAdapter

TEMPLATES = ("hf", "vicuna_v1", "llava_v1", "halc")


@pytest.mark.parametrize("size", [224, 336])
def test_image_span_all_templates(size, tiny_adapter, tiny_adapter_336, test_image, caption_prompt):
    base = tiny_adapter if size == 224 else tiny_adapter_336
    n_expected = (size // 14) ** 2
    starts = set()
    for name in TEMPLATES:
        adapter = LlavaAdapter(base.model, base.processor, prompt_template=name)
        inputs = adapter.prepare(test_image, caption_prompt)
        text = templates.render(name, caption_prompt)
        # Independent count: BOS + the tokens before the placeholder.
        start = len(adapter.tokenizer(text.split("<image>")[0])["input_ids"])
        span = (inputs.image_start, inputs.n_image_tokens)
        assert adapter.image_span(inputs.input_ids) == (start, n_expected) == span
        assert inputs.input_ids[0, start : start + n_expected].eq(adapter.image_token_id).all()
        starts.add(start)
    assert len(starts) > 1  # the templates really place the image differently


def test_bad_image_span_names_the_template_key(tiny_adapter, test_image, caption_prompt):
    ids = tiny_adapter.prepare(test_image, caption_prompt).input_ids
    s, n = tiny_adapter.image_span(ids)
    holed = ids.clone()
    holed[0, s + 10] = 5
    with pytest.raises(ConfigError, match="model.prompt_template"):
        tiny_adapter.image_span(holed)
    short = torch.cat([ids[:, : s + 1], ids[:, s + 2 :]], dim=1)
    with pytest.raises(ConfigError, match="model.prompt_template"):
        tiny_adapter.image_span(short)
    with pytest.raises(ConfigError, match="model.prompt_template"):
        tiny_adapter.image_span(torch.cat([ids[:, :s], ids[:, s + n :]], dim=1))


def test_shared_inputs_embeds_match_pixel_path(tiny_adapter, test_image, caption_prompt):
    inputs = tiny_adapter.prepare(test_image, caption_prompt)
    with torch.inference_mode():
        embeds = tiny_adapter.build_inputs_embeds(inputs)
        z_pix = tiny_adapter.last_logits(
            tiny_adapter.forward(
                cache=tiny_adapter.new_cache(), input_ids=inputs.input_ids, pixel_values=inputs.pixel_values
            )
        )
        z_emb = tiny_adapter.last_logits(
            tiny_adapter.forward(cache=tiny_adapter.new_cache(), input_ids=inputs.input_ids, inputs_embeds=embeds)
        )
    assert embeds.shape == (1, inputs.length, tiny_adapter.model.config.text_config.hidden_size)
    torch.testing.assert_close(z_emb, z_pix, **TOL)
