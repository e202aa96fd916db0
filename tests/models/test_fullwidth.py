"""`model=llava-1.5-7b-shape`: LLaVA-1.5-7B's real widths, random weights (issue 19, item 6).

Opt-in (`pytest -m fullwidth`; `make test` leaves it out): the model has ~1 B parameters with its 2
text layers (a 2 GB float16 checkpoint, built offline once into the cache) and a prefill costs
seconds on a CPU. It checks what the small test models cannot: the shapes of the real config are
what `from_pretrained` loads, the 24-layer CLIP-L/336 tower yields 576 image tokens, and every
method's zeroed identity holds bit for bit at 32 heads × 128 and a 32064-wide lm_head.
"""

from __future__ import annotations

import pytest
import torch

from tests.stepping import gen_config
from methods.vanilla import Vanilla
from tests.zeroed import assert_bitwise_vanilla, main_logits
from vh_bench.config import compose
from vh_bench.models.llava import LlavaAdapter
from vh_bench.runner import resolve_model_path

pytestmark = pytest.mark.fullwidth

# llava-hf/llava-1.5-7b-hf's config.json (text and vision), the values this model must reproduce.
LLAVA_7B_TEXT = {"hidden_size": 4096, "num_attention_heads": 32, "num_key_value_heads": 32,
                 "intermediate_size": 11008, "vocab_size": 32064, "rms_norm_eps": 1e-5,
                 "max_position_embeddings": 4096, "initializer_range": 0.02}  # fmt: skip
LLAVA_7B_VISION = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "intermediate_size": 4096, "patch_size": 14, "image_size": 336}  # fmt: skip


@pytest.fixture(scope="module")
def shaped():
    cfg = compose(["model=llava-1.5-7b-shape"])
    return LlavaAdapter.load(resolve_model_path(cfg), dtype="float32")


@pytest.fixture(scope="module")
def shaped_inputs(shaped, test_image, caption_prompt):
    return shaped.prepare(test_image, caption_prompt)


def test_loads_with_the_real_widths(shaped):
    cfg = shaped.config
    assert {k: getattr(cfg.text_config, k) for k in LLAVA_7B_TEXT} == LLAVA_7B_TEXT
    assert {k: getattr(cfg.vision_config, k) for k in LLAVA_7B_VISION} == LLAVA_7B_VISION
    assert cfg.text_config.num_hidden_layers == 2 and shaped.n_layers == 2
    assert tuple(shaped.lm_head.weight.shape) == (32064, 4096)
    q = shaped.layers[0].self_attn.q_proj.weight
    assert tuple(q.shape) == (4096, 4096) and tuple(shaped.layers[0].mlp.up_proj.weight.shape) == (11008, 4096)
    assert tuple(shaped.projector.linear_1.weight.shape) == (4096, 1024)
    # initializer 0.02: the drawn weights have that spread (a 16M-entry sample: ±1%)
    assert float(q.float().std()) == pytest.approx(0.02, rel=0.01)


def test_the_24_layer_tower_gives_576_image_tokens(shaped, shaped_inputs):
    assert shaped_inputs.n_image_tokens == 576 == shaped.expected_image_tokens()
    with torch.inference_mode():
        feats = shaped.image_features(shaped_inputs.pixel_values)
    assert tuple(feats.shape) == (576, 4096)


GEN = gen_config("greedy", n=3)


@pytest.fixture(scope="module")
def vanilla_run(shaped, shaped_inputs):
    return main_logits(Vanilla(), shaped, shaped_inputs, GEN)


@pytest.mark.parametrize("name", ["vasparse", "vasparse_no_cutoff", "vcd_batched", "fastv", "topk"])
def test_zeroed_identities_hold_at_full_width(shaped, shaped_inputs, vanilla_run, name):
    assert_bitwise_vanilla(name, shaped, shaped_inputs, GEN, reference=vanilla_run)
