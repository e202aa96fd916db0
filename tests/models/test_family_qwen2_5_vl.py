"""Qwen2.5-VL behind the adapter contract, on the random tiny model (model=tiny_qwen2_5_vl).

References are computed apart from the adapter: visual-token counts and M-RoPE positions from the
config arithmetic written out here, and transformers' own classes (`generate`, the stock forward
that derives its positions from `mm_token_type_ids`, `get_rope_index`, the text model's rotary
embedding and layers).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
from pathlib import Path

import pytest
import torch

from methods.fastv import FastV
from methods.halc_fov import ViewEncoder
from methods.vanilla import Vanilla
from methods.vasparse_svcd import SparseContrastBranch, draw_image_mask
from methods.vcd import VCD
from tests.helpers import results_override
from tests.stepping import TOL, assert_equivalent, gen_config, run_method
from tests.zeroed import CUTOFF_ON, ZEROED, assert_bitwise_vanilla, main_logits
from vh_bench.config import compose
from vh_bench.decoding import attention
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError
from vh_bench.models import templates
from vh_bench.models.qwen2_5_vl import ROPE_DELTA, Qwen2_5_VLAdapter
from vh_bench.models.tiny_qwen2_5_vl import build_from_dict
from vh_bench.paths import cache_dir
from vh_bench.preflight import check_model
from vh_bench.runner import model_identity, plan, run

CFG = compose(["model=tiny_qwen2_5_vl"]).model
PIXELS = {"min_pixels": int(CFG.min_pixels), "max_pixels": int(CFG.max_pixels)}
PATCH, MERGE, T_PATCH = int(CFG.tiny.patch_size), int(CFG.tiny.merge_size), int(CFG.tiny.temporal_patch_size)


def tiny_qwen_checkpoint() -> str:
    return str(build_from_dict(dict(CFG.tiny), cache_dir() / "models"))


@pytest.fixture(scope="module")
def adapter() -> Qwen2_5_VLAdapter:
    return Qwen2_5_VLAdapter.load(tiny_qwen_checkpoint(), **PIXELS)


@pytest.fixture(scope="module")
def inputs(adapter, test_image, caption_prompt):
    return adapter.prepare(test_image, caption_prompt)


@pytest.fixture(scope="module")
def vanilla_greedy(adapter, inputs):
    return main_logits(Vanilla(), adapter, inputs, gen_config("greedy", n=6))


@pytest.fixture(scope="module")
def vanilla_beam(adapter, inputs):
    return main_logits(Vanilla(), adapter, inputs, gen_config("beam", n=6))


def grid_by_hand(width: int, height: int) -> tuple[int, int]:
    """(patch rows, patch columns) after Qwen's resize, by the documented rule: each side rounded to
    a multiple of 28 (patch·merge), then scaled down if the area exceeds max_pixels."""
    f = PATCH * MERGE
    h, w = round(height / f) * f, round(width / f) * f
    if h * w > PIXELS["max_pixels"]:
        beta = math.sqrt(height * width / PIXELS["max_pixels"])
        h, w = math.floor(height / beta / f) * f, math.floor(width / beta / f) * f
    assert h * w >= PIXELS["min_pixels"]
    return h // PATCH, w // PATCH


def stock_positions(adapter, ids: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' own `get_rope_index`, fed the processor-style token types."""
    get_rope_index = adapter.model.model.get_rope_index
    kwargs = {"image_grid_thw": grid}
    if "mm_token_type_ids" in inspect.signature(get_rope_index).parameters:  # transformers 5.2x
        kwargs["mm_token_type_ids"] = (ids == adapter.image_token_id).int()
    return get_rope_index(ids, **kwargs)


def stock_logits(adapter, ids: torch.Tensor, pixel_values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Last-position logits of transformers' own forward, positions derived by the model itself."""
    adapter.model.model.rope_deltas = None  # no state left over from another call
    types = {}
    if "mm_token_type_ids" in inspect.signature(adapter.model.forward).parameters:  # transformers 5.2x
        types["mm_token_type_ids"] = (ids == adapter.image_token_id).int()
    out = adapter.model(
        input_ids=ids, pixel_values=pixel_values, image_grid_thw=grid, use_cache=False, logits_to_keep=1, **types
    )
    adapter.model.model.rope_deltas = None
    return out.logits[:, -1].float()


# ---- prepared inputs -----------------------------------------------------------------------------
def test_visual_tokens_and_positions_by_hand(adapter, inputs, test_image):
    rows, cols = grid_by_hand(*test_image.size)
    assert (rows, cols) == (18, 22)  # 320×240 → 308×252 px
    n = rows * cols // MERGE**2
    assert inputs.n_image_tokens == n == adapter.expected_image_tokens(test_image) == 99
    assert inputs.vision_inputs["image_grid_thw"].tolist() == [[1, rows, cols]]
    assert tuple(inputs.pixel_values.shape) == (rows * cols, 3 * T_PATCH * PATCH * PATCH)
    assert inputs.prompt_text == (  # Qwen2.5-VL-Instruct's chat format, default system message
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Please describe this image in detail.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # The span: every token of the template before <image>, then <|vision_start|>.
    before = templates.render("qwen", "x").split("<image>")[0]
    s = len(adapter.tokenizer(before)["input_ids"]) + 1
    ids = inputs.input_ids[0]
    assert inputs.image_start == s and ids[s - 1] == adapter.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert ids[s : s + n].eq(adapter.image_token_id).all() and int((ids == adapter.image_token_id).sum()) == n
    assert ids[s + n] == adapter.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    # M-RoPE by hand: text 0…s−1; merged token k at (s, s + row, s + col) of the 9×11 merged grid;
    # text after the image continues from s + max(9, 11).
    L, gh, gw = inputs.length, rows // MERGE, cols // MERGE
    want = torch.zeros(3, L, dtype=torch.long)
    want[:, :s] = torch.arange(s)
    k = torch.arange(n)
    want[0, s : s + n] = s
    want[1, s : s + n] = s + k // gw
    want[2, s : s + n] = s + k % gw
    want[:, s + n :] = s + max(gh, gw) + torch.arange(L - s - n)
    pos, delta = adapter.prompt_positions(inputs.input_ids, inputs.vision_inputs)
    assert torch.equal(pos[:, 0], want)
    assert delta == s + max(gh, gw) + (L - s - n) - L
    ref, ref_delta = stock_positions(adapter, inputs.input_ids, inputs.vision_inputs["image_grid_thw"])
    assert torch.equal(pos, ref) and delta == int(ref_delta)


def test_greedy_tokens_equal_transformers_generate(adapter, inputs, vanilla_greedy):
    """The adapter's explicit positions (prefill, then cache length + offset) = generate's own
    `rope_deltas` bookkeeping, token for token."""
    enc = adapter.processor(images=inputs.image, text=inputs.prompt_text, return_tensors="pt")
    assert torch.equal(enc["input_ids"], inputs.input_ids)
    with torch.inference_mode():
        adapter.model.model.rope_deltas = None
        out = adapter.model.generate(**enc, max_new_tokens=6, do_sample=False)
        adapter.model.model.rope_deltas = None
    assert vanilla_greedy[0] == out[0, inputs.length :].tolist()[: len(vanilla_greedy[0])]


def test_rope_offset_lives_on_the_cache_not_the_model(adapter, inputs):
    with torch.inference_mode():
        a, b = adapter.new_cache(), adapter.new_cache()
        adapter.forward(cache=a, input_ids=inputs.input_ids, pixel_values=inputs.pixel_values,
                        vision_inputs=inputs.vision_inputs)  # fmt: skip
        text_only = inputs.input_ids[:, : inputs.image_start - 1]
        adapter.forward(cache=b, input_ids=text_only)
    _, delta = adapter.prompt_positions(inputs.input_ids, inputs.vision_inputs)
    assert getattr(a, ROPE_DELTA) == delta < 0 and getattr(b, ROPE_DELTA) == 0
    assert adapter.model.model.rope_deltas is None


def test_pixel_limits_are_config_keys(test_image):
    path = tiny_qwen_checkpoint()
    with pytest.raises(ConfigError, match=r"model\.min_pixels"):
        Qwen2_5_VLAdapter.load(path, min_pixels=0)
    with pytest.raises(ConfigError, match=r"model\.min_pixels"):
        Qwen2_5_VLAdapter.load(path, min_pixels=200, max_pixels=100)
    for bad in ("model.max_pixels=-1", "model.min_pixels=abc", "model.min_pixels=200000"):
        with pytest.raises(ConfigError, match=r"model\.m(in|ax)_pixels"):  # before torch and any run directory
            check_model(compose(["model=tiny_qwen2_5_vl", bad]).model)
    small = Qwen2_5_VLAdapter.load(path, max_pixels=28 * 28 * 16)
    assert small.expected_image_tokens(test_image) <= 16
    ident = model_identity(compose(["model=tiny_qwen2_5_vl"]))
    assert (ident["min_pixels"], ident["max_pixels"]) == (PIXELS["min_pixels"], PIXELS["max_pixels"])
    assert "min_pixels" not in model_identity(compose(["model=tiny"]))


def test_checkpoint_has_hub_processor_files():
    """Laid out like a hub snapshot; AutoProcessor builds Qwen2_5_VLProcessor only with torchvision
    (its video processor), which the harness therefore does not use."""
    path = Path(tiny_qwen_checkpoint())
    pre = json.loads((path / "preprocessor_config.json").read_text())
    assert pre["processor_class"] == "Qwen2_5_VLProcessor" and pre["patch_size"] == PATCH
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision absent: transformers cannot build Qwen2_5_VLProcessor's video processor")
    from transformers import AutoProcessor

    auto = AutoProcessor.from_pretrained(path)
    assert auto.image_token_id == Qwen2_5_VLAdapter.load(str(path)).image_token_id


# ---- identity ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ZEROED))
def test_zeroed_method_is_vanilla_bit_for_bit(adapter, inputs, vanilla_greedy, name):
    assert_bitwise_vanilla(name, adapter, inputs, gen_config("greedy", n=6), reference=vanilla_greedy)


@pytest.mark.parametrize("name", sorted(set(ZEROED) - CUTOFF_ON))
def test_zeroed_method_is_vanilla_bit_for_bit_under_beam_search(adapter, inputs, vanilla_beam, name):
    """Beams expand and reorder the caches that carry the M-RoPE offset."""
    assert_bitwise_vanilla(name, adapter, inputs, gen_config("beam", n=6), reference=vanilla_beam)


# ---- FastV -----------------------------------------------------------------------------------------
def test_fastv_physical_equals_mask(adapter, inputs):
    gen = gen_config("greedy", n=6)
    phys = run_method(FastV(), adapter, inputs, gen)
    mask = run_method(FastV(mode="mask"), adapter, inputs, gen)
    assert torch.equal(phys.stepper.pruning.keep, mask.stepper.pruning.keep)
    assert phys.stepper.pruning.dropped.numel() == 99 - 50  # round half up of 49.5 kept
    assert_equivalent(phys, mask)


def test_fastv_keeps_the_original_3d_positions(adapter, inputs):
    """At layer K the pruned sequence carries the rotary (cos, sin) of the kept tokens' own M-RoPE
    positions from transformers' `get_rope_index`; decode steps continue at L + offset."""
    K = 2
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy(module, args, kwargs):
        seen.append(tuple(t.clone() for t in kwargs["position_embeddings"]))

    stepper = FastV(k=K).stepper(adapter, inputs, SampleSeeds(0, "s0"))
    with torch.inference_mode(), attention.control(adapter, stepper.controller):
        handle = adapter.register_layer_pre_hook(K, spy)  # after the pruning hooks: sees what layer K gets
        try:
            z = stepper.prefill()
            for _ in range(2):
                z = stepper.step(z.argmax(-1))
        finally:
            handle.remove()
    keep = stepper.pruning.keep
    assert keep.numel() < inputs.length
    ref, delta = stock_positions(adapter, inputs.input_ids, inputs.vision_inputs["image_grid_thw"])
    kept_pos = ref[:, :, keep]
    assert not torch.equal(kept_pos[1], kept_pos[2])  # height ≠ width rows: truly 3-D, not 1-D
    rotary = adapter.language_model.rotary_emb
    x = torch.zeros(1, 1, dtype=adapter.dtype)
    want = rotary(x, kept_pos)
    assert seen[0][0].shape[1] == keep.numel()
    assert torch.equal(seen[0][0], want[0]) and torch.equal(seen[0][1], want[1])
    for t in (1, 2):  # the t-th new token sits at L + t − 1 + offset on all three rows
        step = torch.full((3, 1, 1), inputs.length + t - 1 + int(delta))
        cos, sin = rotary(x, step)
        assert torch.equal(seen[t][0], cos) and torch.equal(seen[t][1], sin)


# ---- VCD -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("batched", [False, True])
def test_vcd_contrast_branch_is_a_fresh_forward_on_the_noised_pixels(adapter, inputs, batched):
    seen = []

    def after(stepper):
        seen.append((stepper.last_logits.clone(), stepper.last_contrast_logits.clone()))

    run = run_method(VCD(batched=batched), adapter, inputs, gen_config("greedy", n=4), after=after)
    pv_cd = run.stepper.pixel_values_cd
    assert pv_cd.shape == inputs.pixel_values.shape and not torch.equal(pv_cd, inputs.pixel_values)
    grid = inputs.vision_inputs["image_grid_thw"]
    with torch.inference_mode():
        for t, (main, cd) in enumerate(seen):
            ids = torch.cat([inputs.input_ids, torch.tensor([run.tokens[:t]], dtype=torch.long)], dim=1)
            fresh = adapter.last_logits(adapter.forward(
                cache=adapter.new_cache(), input_ids=ids, pixel_values=pv_cd, vision_inputs=inputs.vision_inputs))
            torch.testing.assert_close(cd, fresh, **TOL)
            torch.testing.assert_close(cd, stock_logits(adapter, ids, pv_cd, grid), **TOL)
            torch.testing.assert_close(main, stock_logits(adapter, ids, inputs.pixel_values, grid), **TOL)
            assert not torch.allclose(cd, main, rtol=1e-3, atol=1e-3), t


# ---- VASparse's early-exit contrast (stop_layer > 0) ---------------------------------------------
def test_svcd_layer_prefix_uses_the_kept_tokens_3d_positions(adapter, inputs):
    """Layers 0…m−1 on the prompt without the masked image tokens = transformers' text model on the
    kept embeddings at their `get_rope_index` positions (its hidden state after layer m−1)."""
    m = 2
    masked = draw_image_mask(inputs, 0.5, SampleSeeds(0, "s0").torch_generator("svcd_mask"))
    lm = adapter.language_model
    with torch.inference_mode():
        embeds = adapter.build_inputs_embeds(inputs)
        branch = SparseContrastBranch(adapter, inputs, masked, stop_layer=m, final_norm=True)
        got = branch.prefill(embeds)
        tok = got.argmax(-1)
        got_step = branch.step(tok)
        ref, delta = stock_positions(adapter, inputs.input_ids, inputs.vision_inputs["image_grid_thw"])
        keep = branch.keep
        new = torch.full((3, 1, 1), inputs.length + int(delta))
        seq = torch.cat([embeds[:, keep], adapter.embed_tokens(tok.view(1, 1))], dim=1)
        pos = torch.cat([ref[:, :, keep], new], dim=2)
        hs = lm(inputs_embeds=seq, position_ids=pos, use_cache=False, output_hidden_states=True).hidden_states
        assert torch.equal(hs[0], seq)  # hidden_states[j] = after layer j − 1
        want = adapter.lm_head(adapter.final_norm(hs[m]))[0].float()
    torch.testing.assert_close(got[0], want[-2], **TOL)
    torch.testing.assert_close(got_step[0], want[-1], **TOL)


# ---- HALC's views ----------------------------------------------------------------------------------
def test_halc_views_fill_the_span_with_the_samples_grid(adapter, inputs):
    views = ViewEncoder(adapter, inputs)
    boxes = [(0.0, 0.0, 1.0, 1.0), (0.1, 0.2, 0.5, 0.6), (0.5, 0.5, 0.9, 0.8)]
    pixels, extra = views.pixel_values(boxes)
    assert extra["image_grid_thw"].tolist() == inputs.vision_inputs["image_grid_thw"].tolist() * 3
    n, grid = inputs.pixel_values.shape[0], inputs.vision_inputs["image_grid_thw"]
    with torch.inference_mode():
        logits = views.logits(boxes, [])
        clean = stock_logits(adapter, inputs.input_ids, inputs.pixel_values, grid)
        crop = stock_logits(adapter, inputs.input_ids, pixels[n : 2 * n], grid)  # the second view alone
    torch.testing.assert_close(logits[0], clean[0], **TOL)  # the whole image is the sample itself
    torch.testing.assert_close(logits[1], crop[0], **TOL)
    assert not torch.allclose(logits[1], logits[2], rtol=1e-3, atol=1e-3)


# ---- the runner, every method ----------------------------------------------------------------------
METHODS = ("vanilla", "vcd", "vasparse", "fastv", "topk", "halc_tiny")


def test_every_method_runs_end_to_end(tmp_path):
    for method in METHODS:
        cfg = compose([
            "model=tiny_qwen2_5_vl", f"method={method}", "dataset=demo", "runtime.device=cpu",
            "runtime.dtype=float32", "runtime.progress=false", "runtime.num_threads=1",
            "runtime.scoring_worker=false", "runtime.limit=1", "generation.max_new_tokens=4",
            results_override(tmp_path),
        ])  # fmt: skip
        plan(cfg)  # no refusal
        res = run(cfg)
        stored = json.loads((Path(res["run_dir"]) / "results.json").read_text())
        assert stored["complete"] and stored["n_errors"] == 0, method
        assert stored["model_family"] == "qwen2_5_vl" and stored["visual_tokens"]["min"] > 0, method


def test_halc_word_starts_read_byte_level_bpe_spaces():
    """Qwen's byte-level BPE marks a leading space with `Ġ` (no SentencePiece `▁`): HALC's word
    starts (§7.2) follow it, so a multi-piece word is one word."""
    from methods.halc_words import word_start_table

    class Tok:
        pieces = ["<|endoftext|>", "<|im_end|>", "Ġa", "Ġdog", "gie", "s", ".", "Ġ.", "'s", "ĠÄ"]

        def __len__(self):
            return len(self.pieces)

        def convert_ids_to_tokens(self, ids):
            return [self.pieces[i] for i in ids]

    assert word_start_table(Tok(), 1) == [False, True, True, True, False, False, True, True, False, True]
