"""The shared decoding loop (methods.md §1.4, §8.1–8.2) on the tiny model, vanilla method."""

from __future__ import annotations

import pytest
import torch

from methods.vanilla import Vanilla
from tests.stepping import TOL, replay, run_method
from vh_bench.decoding.loop import process_sampling_scores
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.records import GenConfig


@pytest.fixture(scope="module")
def inputs(tiny_adapter, test_image, caption_prompt):
    return tiny_adapter.prepare(test_image, caption_prompt)


def _hf_generate(adapter, inputs, **kw) -> list[int]:
    with torch.inference_mode():
        out = adapter.model.generate(
            input_ids=inputs.input_ids, pixel_values=inputs.pixel_values, do_sample=False, **kw
        )
    return out[0, inputs.length :].tolist()


def test_greedy_equals_generate(tiny_adapter, inputs):
    gen = GenConfig(strategy="greedy", max_new_tokens=16)
    ours = Vanilla().generate(tiny_adapter, inputs, gen, SampleSeeds(0, "a"))
    ref = _hf_generate(tiny_adapter, inputs, num_beams=1, max_new_tokens=16)
    assert ours.token_ids == ref
    assert ours.n_new_tokens == len(ref) and ours.t_prefill_s > 0 and ours.t_decode_s > 0


def test_beam3_equals_generate(tiny_adapter, inputs):
    gen = GenConfig(strategy="beam", num_beams=3, max_new_tokens=12)
    ours = Vanilla().generate(tiny_adapter, inputs, gen, SampleSeeds(0, "a"))
    ref = _hf_generate(
        tiny_adapter, inputs, num_beams=3, max_new_tokens=12, length_penalty=1.0, early_stopping=False
    )
    assert ours.token_ids == ref


def test_beam1_equals_greedy(tiny_adapter, inputs):
    greedy = Vanilla().generate(tiny_adapter, inputs, GenConfig(max_new_tokens=10), SampleSeeds(0, "a"))
    beam1 = Vanilla().generate(
        tiny_adapter, inputs, GenConfig(strategy="beam", num_beams=1, max_new_tokens=10), SampleSeeds(0, "a")
    )
    assert beam1.token_ids == greedy.token_ids


def test_sampling_is_per_sample_deterministic(tiny_adapter, inputs):
    gen = GenConfig(strategy="sample", max_new_tokens=12)
    a1 = Vanilla().generate(tiny_adapter, inputs, gen, SampleSeeds(0, "coco:1"))
    a2 = Vanilla().generate(tiny_adapter, inputs, gen, SampleSeeds(0, "coco:1"))
    b = Vanilla().generate(tiny_adapter, inputs, gen, SampleSeeds(0, "coco:2"))
    assert a1.token_ids == a2.token_ids
    assert a1.token_ids != b.token_ids


def test_top_k0_top_p1_leave_distribution_untouched():
    z = torch.randn(1, 50, generator=torch.Generator().manual_seed(0))
    out = process_sampling_scores(z, GenConfig(strategy="sample", top_k=0, top_p=1.0, temperature=1.0))
    assert torch.equal(out.softmax(-1), z.softmax(-1))
    # The control: the switches do act when set.
    assert torch.isinf(process_sampling_scores(z, GenConfig(strategy="sample", top_k=5))).sum() == 45
    assert torch.isinf(process_sampling_scores(z, GenConfig(strategy="sample", top_p=0.5))).any()


def test_sampled_token_probability_is_softmax_of_scores(tiny_adapter, inputs):
    """The first draw is a multinomial over softmax(z): replaying the generator reproduces it."""
    gen = GenConfig(strategy="sample", max_new_tokens=1)
    run = run_method(Vanilla(), tiny_adapter, inputs, gen, sample_id="p")
    probs = run.z[0][0].float().softmax(-1).cpu()
    g = SampleSeeds(0, "p").torch_generator("sample")
    assert run.tokens == [int(torch.multinomial(probs, 1, generator=g))]


def test_kv_cache_equals_full_recompute(tiny_adapter, inputs):
    """Cached greedy decoding (16 steps) = the full sequence re-run without a cache.

    One cache-free forward over prompt + generated tokens yields, by causality, the scores each step
    would get from re-running its own prefix; position L−1+t scored step t.
    """
    run = run_method(Vanilla(), tiny_adapter, inputs, GenConfig(max_new_tokens=16))
    assert len(run.tokens) == 16
    L = inputs.length
    ids = torch.cat([inputs.input_ids, torch.tensor([run.tokens[:-1]])], dim=1)
    with torch.inference_mode():
        out = tiny_adapter.model(input_ids=ids, pixel_values=inputs.pixel_values, use_cache=False, logits_to_keep=0)
    full = out.logits[0, L - 1 :].float()
    torch.testing.assert_close(full, torch.cat(run.z), **TOL)
    assert full.argmax(-1).tolist() == run.tokens


def test_beam_reorder_replay_vanilla(tiny_adapter, inputs):
    """Every final beam hypothesis, replayed alone, reproduces the scores the beam loop used."""
    run = run_method(Vanilla(), tiny_adapter, inputs, GenConfig(strategy="beam", num_beams=3, max_new_tokens=8))
    assert run.result.hypotheses and run.result.hypotheses[0] == run.tokens
    for hyp in run.result.hypotheses:
        z, _ = replay(Vanilla(), tiny_adapter, inputs, hyp)
        torch.testing.assert_close(z, run.recorder.by_prefix[tuple(hyp[:-1])], **TOL)
