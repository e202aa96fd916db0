"""LLaVA-NeXT behind the adapter contract (issue 17): inputs, identity, FastV, VCD, HALC's views, runs.

The tiny model (configs/model/tiny_llava_next.yaml) has 112-px tiles of 8×8 features and
LLaVA-1.6's five grids (1×2, 2×1, 2×2, 3×1, 1×3 tiles). Counts below are worked by hand from
that geometry, not from the processor's helper.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from methods.fastv import FastV
from methods.halc_fov import ViewEncoder, fov_boxes
from methods.vanilla import Vanilla
from methods.vcd import VCD
from tests.helpers import FAST, results_override
from tests.stepping import assert_equivalent, gen_config, margins_ok, run_method
from tests.zeroed import ZEROED, assert_bitwise_vanilla, main_logits
from vh_bench.config import compose
from vh_bench.errors import ConfigError
from vh_bench.models.llava_next import LlavaNextAdapter
from vh_bench.runner import load_adapter, resolve_model_path, run

MODEL = "model=tiny_llava_next"
# 320×240 on the 2×2 grid (224×224 px, 16×16 features): unpadded to 240·16/320 = 12 rows of 16,
# one newline per row, plus the 8×8 base view.
N_320x240 = 64 + 12 * 16 + 12
# The first two demo images. 336×336 on the same grid: square, nothing unpadded. 400×336: unpadded
# to round(336·16/400) = 13 rows, the padding (16 − 13) // 2 = 1 taken off both sides: 14 rows.
N_336x336 = 64 + 16 * 16 + 16
N_400x336 = 64 + 14 * 16 + 14


@pytest.fixture(scope="module")
def adapter() -> LlavaNextAdapter:
    cfg = compose([MODEL])
    loaded = load_adapter(cfg, resolve_model_path(cfg), "cpu", "float32")
    assert isinstance(loaded, LlavaNextAdapter)
    return loaded


@pytest.fixture(scope="module")
def inputs(adapter, test_image, caption_prompt):
    return adapter.prepare(test_image, caption_prompt)


def test_visual_tokens_are_one_run_of_the_hand_worked_length(adapter, inputs, caption_prompt):
    ids = inputs.input_ids[0]
    where = torch.nonzero(ids == adapter.image_token_id).flatten()
    assert inputs.n_image_tokens == where.numel() == N_320x240
    assert where.tolist() == list(range(inputs.image_start, inputs.image_start + N_320x240))
    prefix = adapter.render_prompt(caption_prompt).split("<image>")[0]
    assert inputs.image_start == len(adapter.tokenizer(prefix)["input_ids"])  # BOS + prefix words
    assert inputs.pixel_values.shape == (1, 5, 3, 112, 112)  # base view + 2×2 tiles
    assert inputs.vision_inputs["image_sizes"].tolist() == [[240, 320]]


def test_embeds_path_equals_pixel_path(adapter, inputs):
    with torch.inference_mode():
        a = adapter.forward(cache=adapter.new_cache(), input_ids=inputs.input_ids,
                            pixel_values=inputs.pixel_values, vision_inputs=inputs.vision_inputs)  # fmt: skip
        embeds = adapter.build_inputs_embeds(inputs)
        b = adapter.forward(cache=adapter.new_cache(), input_ids=inputs.input_ids, inputs_embeds=embeds)
    torch.testing.assert_close(adapter.last_logits(a), adapter.last_logits(b))
    # The image span really carries the image: the newline row is the learned parameter.
    newline = adapter.model.model.image_newline
    rows = embeds[0, inputs.image_start + 64 : inputs.image_start + N_320x240].view(12, 17, -1)
    assert torch.equal(rows[:, -1], newline.expand(12, -1).to(rows.dtype))


@pytest.mark.parametrize("name", sorted(ZEROED))
def test_zeroed_method_is_vanilla_bit_for_bit(adapter, inputs, name):
    assert_bitwise_vanilla(name, adapter, inputs, gen_config("greedy", n=6))


def test_fastv_physical_equals_mask(adapter, inputs):
    gen = gen_config("greedy", n=8)
    phys = run_method(FastV(), adapter, inputs, gen)
    mask = run_method(FastV(mode="mask"), adapter, inputs, gen)
    assert torch.equal(phys.stepper.pruning.keep, mask.stepper.pruning.keep)
    assert phys.stepper.pruning.dropped.numel() == N_320x240 // 2  # ratio 0.5 of the whole run
    assert_equivalent(phys, mask)
    assert margins_ok(phys.z)
    assert phys.tokens != main_logits(Vanilla(), adapter, inputs, gen)[0]  # the pruning acts


@pytest.mark.parametrize("batched", [False, True])
def test_vcd_contrast_equals_a_fresh_forward_on_the_noised_pixels(adapter, inputs, batched):
    seen = []
    run = run_method(VCD(batched=batched), adapter, inputs, gen_config("greedy", n=4),
                     after=lambda s: seen.append(s.last_contrast_logits.clone()))  # fmt: skip
    noised = run.stepper.pixel_values_cd
    assert noised.shape == inputs.pixel_values.shape and not torch.equal(noised, inputs.pixel_values)
    with torch.inference_mode():
        for t, cd in enumerate(seen):
            ids = torch.cat([inputs.input_ids, torch.tensor([run.tokens[:t]], dtype=torch.long)], dim=1)
            fresh = adapter.forward(cache=adapter.new_cache(), input_ids=ids, pixel_values=noised,
                                    vision_inputs=inputs.vision_inputs)  # fmt: skip
            torch.testing.assert_close(cd, adapter.last_logits(fresh), rtol=1e-4, atol=1e-4)


def test_halc_views_fill_the_span_and_batch_like_single_forwards(adapter, inputs):
    boxes = fov_boxes([0.1, 0.2, 0.5, 0.9], 3, 0.6)  # tall crops: another grid unless resized
    enc = ViewEncoder(adapter, inputs)
    with torch.inference_mode():
        batched = enc.logits(boxes, [])
        pv, extra = enc.pixel_values(boxes)
        assert pv.shape[:2] == (3, 5) and extra["image_sizes"].tolist() == [[240, 320]] * 3
        for v in range(3):
            out = adapter.forward(cache=adapter.new_cache(), input_ids=inputs.input_ids, pixel_values=pv[v : v + 1],
                                  vision_inputs={"image_sizes": extra["image_sizes"][v : v + 1]})  # fmt: skip
            torch.testing.assert_close(batched[v], adapter.last_logits(out)[0], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(batched[0], batched[2], atol=1e-3)  # the views differ


@pytest.mark.parametrize("method", ["vanilla", "vcd", "vasparse", "fastv", "topk", "halc_tiny"])
def test_every_method_runs_end_to_end(tmp_path: Path, method: str) -> None:
    overrides = [o for o in FAST if not o.startswith("model.tiny")]
    res = run(compose([*overrides, MODEL, f"method={method}", "runtime.limit=2",
                       "generation.max_new_tokens=4", results_override(tmp_path)]))  # fmt: skip
    stored = json.loads((Path(res["run_dir"]) / "results.json").read_text())
    assert stored["complete"] and stored["n_errors"] == 0 and stored["n_done"] == 2
    assert stored["model_family"] == "llava_next"
    assert stored["visual_tokens"] == {"min": N_400x336, "mean": (N_336x336 + N_400x336) / 2, "max": N_336x336}
    assert stored["metrics"]["chair"]["n_captions"] == 2


def test_a_next_checkpoint_under_the_llava_family_names_the_family_to_set(tmp_path: Path) -> None:
    cfg = compose([MODEL])
    path = resolve_model_path(cfg)
    with pytest.raises(ConfigError, match=r"`model.path`: .*'llava_next' checkpoint.*set model.family=llava_next"):
        run(compose([*FAST[1:], "model=llava-1.5-7b", f"model.path={path}", "runtime.limit=1", results_override(tmp_path)]))

