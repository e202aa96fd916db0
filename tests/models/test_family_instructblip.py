"""InstructBLIP behind the adapter contract, on the random tiny model (`model=tiny_instructblip`).

References are independent of the adapter: transformers' own `InstructBlipForConditionalGeneration`
forward and generate (stock attention), the processor's tokenizers on the plain text, the config's
query count, fresh forwards for VCD's noised branch and HALC's views.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from methods.fastv import FastV
from methods.vanilla import Vanilla
from methods.vasparse import VASparse
from methods.vcd import VCD
from tests.helpers import FAST, results_override
from tests.stepping import TOL, assert_equivalent, gen_config, margins_ok, run_method
from tests.zeroed import ZEROED, assert_bitwise_vanilla
from vh_bench.config import compose
from vh_bench.errors import ConfigError
from vh_bench.models import registry
from vh_bench.models.adapter import Adapter
from vh_bench.models.instructblip import InstructBlipAdapter
from vh_bench.models.tiny_instructblip import TinyBlipSpec, build_tiny_instructblip
from vh_bench.paths import cache_dir
from vh_bench.runner import run

SPEC = TinyBlipSpec()  # configs/model/tiny_instructblip.yaml's spec
GREEDY = gen_config("greedy", n=6)


@pytest.fixture(scope="module")
def checkpoint() -> str:
    return str(build_tiny_instructblip(SPEC, cache_dir() / "models"))


@pytest.fixture(scope="module")
def adapter(checkpoint) -> InstructBlipAdapter:
    return InstructBlipAdapter.load(checkpoint)


@pytest.fixture(scope="module")
def stock(checkpoint) -> InstructBlipAdapter:
    """Same weights, transformers' own sdpa attention everywhere: the reference model."""
    return InstructBlipAdapter.load(checkpoint, stock_attention=True)


@pytest.fixture(scope="module")
def blip_inputs(adapter, test_image, caption_prompt):
    return adapter.prepare(test_image, caption_prompt)


def stock_logits(stock, image, text: str, extra: list[int] = ()) -> torch.Tensor:
    """transformers' forward on the processor's encoding of `text` (+ `extra` ids): last logits."""
    enc = stock.processor(images=image, text=text, return_tensors="pt")
    ids = torch.cat([enc["input_ids"], torch.tensor([list(extra)], dtype=torch.long)], dim=1)
    with torch.inference_mode():
        out = stock.model(
            pixel_values=enc["pixel_values"],
            qformer_input_ids=enc["qformer_input_ids"],
            qformer_attention_mask=enc["qformer_attention_mask"],
            input_ids=ids,
        )
    return out.logits[:, -1].float()


# ---- layout and prepared inputs ------------------------------------------------------------------
def test_registry_and_layout(adapter):
    fam = registry.family("instructblip")
    assert fam.adapter_class() is InstructBlipAdapter and registry.family_of_type("instructblip") is fam
    assert isinstance(adapter, Adapter) and adapter.family == "instructblip"
    model = adapter.model
    # The contract's modules are the Llama causal LM's; vh_attn only on the language model.
    assert adapter.layers is model.language_model.model.layers and len(adapter.layers) == SPEC.text_layers
    assert adapter.lm_head is model.language_model.lm_head
    assert adapter.final_norm is model.language_model.model.norm
    assert adapter.embed_tokens is model.language_model.model.embed_tokens
    assert adapter.attn_setting == "text=vh_attn(sdpa),vision=sdpa,qformer=sdpa"
    assert adapter.attention_state is not None


def test_prepared_inputs_put_32_queries_first(adapter, blip_inputs, test_image, caption_prompt):
    cfg = json.loads((Path(adapter.model.name_or_path) / "config.json").read_text())
    n_query = cfg["num_query_tokens"]
    assert n_query == SPEC.num_query_tokens == 32
    assert (blip_inputs.image_start, blip_inputs.n_image_tokens) == (0, n_query)
    assert blip_inputs.prompt_text == "<image>" + caption_prompt
    tok = adapter.tokenizer
    # Independent layout: the placeholders, then BOS, then the instruction's own tokens.
    words = tok(caption_prompt, add_special_tokens=False)["input_ids"]
    want = [cfg["image_token_index"]] * n_query + [tok.bos_token_id] + words
    assert blip_inputs.input_ids[0].tolist() == want
    assert blip_inputs.image_positions.tolist() == list(range(n_query))
    # The Q-Former reads the same instruction, with BERT's [CLS] … [SEP].
    qtok = adapter.processor.qformer_tokenizer
    q = [qtok.cls_token_id] + qtok(caption_prompt, add_special_tokens=False)["input_ids"] + [qtok.sep_token_id]
    assert blip_inputs.vision_inputs["qformer_input_ids"][0].tolist() == q
    assert blip_inputs.vision_inputs["qformer_attention_mask"].tolist() == [[1] * len(q)]
    # What the Q-Former yields: n_query rows whatever the image, cross-attending to all ViT tokens.
    with torch.inference_mode():
        vis = adapter.model.vision_model(pixel_values=blip_inputs.pixel_values).last_hidden_state
        feats = adapter.image_features(blip_inputs.pixel_values, blip_inputs.vision_inputs)
    assert vis.shape[1] == (SPEC.image_size // SPEC.patch_size) ** 2 + 1  # patches + CLS
    assert feats.shape == (n_query, SPEC.text_hidden)
    assert blip_inputs.pixel_values.shape == (1, 3, SPEC.image_size, SPEC.image_size)


def test_template_must_open_with_the_image(checkpoint):
    with pytest.raises(ConfigError, match=r"model\.prompt_template"):
        InstructBlipAdapter.load(checkpoint, prompt_template="hf")


def test_processor_with_another_query_count_is_refused(adapter, checkpoint):
    proc = copy.copy(adapter.processor)
    proc.num_query_tokens = 16
    with pytest.raises(ConfigError, match="num_query_tokens=16"):
        InstructBlipAdapter.check_processor(proc, adapter.config, checkpoint)


# ---- the model calls against transformers' own -----------------------------------------------------
def test_pixel_and_embeds_paths_equal_transformers_forward(adapter, stock, blip_inputs, test_image, caption_prompt):
    ref = stock_logits(stock, test_image, caption_prompt)
    with torch.inference_mode():
        pix = adapter.last_logits(
            adapter.forward(cache=adapter.new_cache(), input_ids=blip_inputs.input_ids,
                            pixel_values=blip_inputs.pixel_values, vision_inputs=blip_inputs.vision_inputs)
        )  # fmt: skip
        emb = adapter.last_logits(
            adapter.forward(cache=adapter.new_cache(), input_ids=blip_inputs.input_ids,
                            inputs_embeds=adapter.build_inputs_embeds(blip_inputs))
        )  # fmt: skip
    torch.testing.assert_close(pix, ref, **TOL)
    torch.testing.assert_close(emb, ref, **TOL)
    assert torch.equal(pix, emb)


def test_vanilla_decoding_equals_transformers_generate(adapter, stock, blip_inputs, test_image, caption_prompt):
    run_ = run_method(Vanilla(), adapter, blip_inputs, GREEDY)
    enc = stock.processor(images=test_image, text=caption_prompt, return_tensors="pt")
    with torch.inference_mode():
        out = stock.model.generate(**enc, max_new_tokens=GREEDY.max_new_tokens, do_sample=False, num_beams=1)
    new = out[0].tolist()
    if new[: blip_inputs.length] == blip_inputs.input_ids[0].tolist():  # decoder-only: the prompt comes back
        new = new[blip_inputs.length :]
    assert margins_ok(run_.z)
    assert run_.tokens == new[: len(run_.tokens)]
    # Every decode step's scores equal a cache-free transformers forward on prompt + tokens so far.
    for t, z in enumerate(run_.z):
        torch.testing.assert_close(z, stock_logits(stock, test_image, caption_prompt, run_.tokens[:t]), **TOL)


# ---- methods ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def adapter_and_inputs(request, checkpoint, test_image, caption_prompt):
    a = InstructBlipAdapter.load(checkpoint, dtype=request.param)
    return a, a.prepare(test_image, caption_prompt)


@pytest.mark.parametrize("name", sorted(ZEROED))
def test_zeroed_method_is_vanilla_bit_for_bit(adapter_and_inputs, name):
    a, inputs = adapter_and_inputs
    assert_bitwise_vanilla(name, a, inputs, GREEDY)


def test_fastv_physical_equals_mask(adapter, blip_inputs):
    phys = run_method(FastV(), adapter, blip_inputs, GREEDY)
    mask = run_method(FastV(mode="mask"), adapter, blip_inputs, GREEDY)
    assert torch.equal(phys.stepper.pruning.keep, mask.stepper.pruning.keep)
    dropped = phys.stepper.pruning.dropped
    assert dropped.numel() == 16  # half of the 32 queries
    assert ((dropped >= 0) & (dropped < 32)).all()  # only visual tokens, which sit at 0 … 31
    assert_equivalent(phys, mask)
    assert margins_ok(phys.z)  # the token check inside assert_equivalent ran
    assert phys.tokens != run_method(Vanilla(), adapter, blip_inputs, GREEDY).tokens  # pruning acts


@pytest.mark.parametrize("batched", [False, True])
def test_vcd_contrast_branch_is_a_fresh_forward_on_the_noised_pixels(adapter, blip_inputs, batched):
    seen = []

    def after(stepper):
        seen.append((stepper.last_logits.clone(), stepper.last_contrast_logits.clone()))

    run_ = run_method(VCD(batched=batched), adapter, blip_inputs, GREEDY, after=after)
    stepper = run_.stepper
    assert not torch.equal(stepper.pixel_values_cd, blip_inputs.pixel_values)
    assert len(seen) == len(run_.tokens)
    with torch.inference_mode():
        for t, (main, cd) in enumerate(seen):
            ids = torch.cat([blip_inputs.input_ids, torch.tensor([run_.tokens[:t]], dtype=torch.long)], dim=1)

            def fresh(pixels):
                out = adapter.forward(cache=adapter.new_cache(), input_ids=ids, pixel_values=pixels,
                                      vision_inputs=blip_inputs.vision_inputs)  # fmt: skip
                return adapter.last_logits(out)

            torch.testing.assert_close(cd, fresh(stepper.pixel_values_cd), **TOL)
            torch.testing.assert_close(main, fresh(blip_inputs.pixel_values), **TOL)
            assert not torch.allclose(cd, main, rtol=1e-3, atol=1e-3), t  # the noise reaches the logits


def test_svcd_full_depth_unmasked_stream_equals_transformers(adapter, stock, blip_inputs, test_image, caption_prompt):
    """VASparse's early-exit stream (layer_prefix) on this family's decoder stack: all layers, no
    mask, final norm = transformers' forward on prompt + tokens so far."""
    seen = []
    method = VASparse(vats={"enabled": False}, sap={"enabled": False}, kernel="torch",
                      svcd={"stop_layer": adapter.n_layers, "mask_ratio": 0.0, "final_norm": True})  # fmt: skip
    run_ = run_method(method, adapter, blip_inputs, GREEDY, after=lambda st: seen.append(st.contrast.last_logits.clone()))
    assert len(seen) == len(run_.tokens)
    for t, contrast in enumerate(seen):
        torch.testing.assert_close(contrast, stock_logits(stock, test_image, caption_prompt, run_.tokens[:t]), **TOL)


def test_halc_views_carry_the_instruction_and_match_transformers(adapter, stock, blip_inputs, test_image, caption_prompt):
    crops = [test_image.crop((0, 0, 200, 150)), test_image.crop((100, 60, 320, 240))]
    pixels, vision = adapter.vision_batch(crops, blip_inputs)
    assert pixels.shape == (2, 3, SPEC.image_size, SPEC.image_size)
    q = blip_inputs.vision_inputs["qformer_input_ids"]
    assert vision["qformer_input_ids"].tolist() == q.repeat(2, 1).tolist()
    with torch.inference_mode():
        out = adapter.forward(cache=adapter.new_cache(), input_ids=blip_inputs.input_ids.expand(2, -1),
                              pixel_values=pixels, vision_inputs=vision)  # fmt: skip
    got = adapter.last_logits(out)
    for row, crop in enumerate(crops):
        torch.testing.assert_close(got[row : row + 1], stock_logits(stock, crop, caption_prompt), **TOL)
    assert not torch.allclose(got[0], got[1], rtol=1e-3, atol=1e-3)


# ---- end to end through the runner -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["vanilla", "vcd", "vasparse", "fastv", "topk", "halc_tiny"])
def test_every_method_runs_through_the_runner(tmp_path, method):
    res = run(compose([*FAST, results_override(tmp_path), "model=tiny_instructblip", f"method={method}",
                       "runtime.limit=2"]))  # fmt: skip
    stored = json.loads((Path(res["run_dir"]) / "results.json").read_text())
    assert stored["complete"] is True and stored["n_done"] == 2 and stored["n_errors"] == 0
    assert stored["model_family"] == "instructblip"
    assert stored["visual_tokens"] == {"min": 32, "mean": 32, "max": 32}
    lines = [json.loads(x) for x in (Path(res["run_dir"]) / "samples.jsonl").read_text().splitlines()]
    assert all(line["error"] is None and line["n_new_tokens"] >= 1 for line in lines)
