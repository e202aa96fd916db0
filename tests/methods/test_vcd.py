"""VCD invariants (methods.md §8.3) on the tiny model, CPU fp32."""

from __future__ import annotations

import pytest
import torch

from methods.vanilla import Vanilla
from methods.vcd import VCD, diffusion_noise, noise_coefficients
from tests.stepping import assert_scores_close, check_beam_replay, gen_config, margins_ok, run_method
from vh_bench.config import compose
from vh_bench.decoding.contrast import contrast_scores, plausibility_cutoff
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError
from vh_bench.runner import build_method


# ---- §3.1 noise -------------------------------------------------------------------------------
@pytest.mark.parametrize("step, coef_x, coef_eps", [(500, 0.86302, 0.50517), (999, 0.28504, 0.95851)])
def test_noise_coefficients(step, coef_x, coef_eps):
    a, b = noise_coefficients(step)
    assert a == pytest.approx(coef_x, abs=1e-4)
    assert b == pytest.approx(coef_eps, abs=1e-4)


def test_noise_is_the_ddpm_forward_step_without_clamping():
    x = torch.linspace(-1.8, 2.1, 96).reshape(1, 3, 8, 4)  # a normalised pixel tensor
    g1, g2 = SampleSeeds(0, "a").torch_generator("vcd_noise"), SampleSeeds(0, "a").torch_generator("vcd_noise")
    x_cd = diffusion_noise(x, 999, g1)
    eps = torch.randn(x.shape, generator=g2, dtype=torch.float32)
    a, b = noise_coefficients(999)
    assert torch.equal(x_cd, a * x + b * eps)
    assert x_cd.max() > x.max() or x_cd.min() < x.min()  # values outside the clean range persist
    # per-sample: another sample id draws other noise
    other = diffusion_noise(x, 999, SampleSeeds(0, "b").torch_generator("vcd_noise"))
    assert not torch.equal(other, x_cd)


# ---- §3.2 contrast and cutoff -----------------------------------------------------------------
def test_cutoff_equals_its_probability_form():
    g = torch.Generator().manual_seed(3)
    l = torch.randn(4, 500, generator=g) * 3
    l_cd = torch.randn(4, 500, generator=g) * 3
    beta = 0.1
    z = contrast_scores(l, l_cd, 1.0, beta)
    p = l.softmax(-1)
    removed = p < beta * p.max(dim=-1, keepdim=True).values
    assert removed.any() and (~removed).sum() > 4  # the case is not trivial
    assert torch.equal(torch.isneginf(z), removed)
    assert torch.allclose(z[~removed], (2 * l - l_cd)[~removed])
    assert torch.equal(plausibility_cutoff(l, l, 0.0), l)  # beta = 0 disables it
    assert torch.equal(contrast_scores(l, l_cd, 0.0, 0.0), l)  # alpha = 0 is exact


def test_cutoff_never_removes_the_argmax():
    l = torch.tensor([[1.0, 1.0, -50.0]])
    z = plausibility_cutoff(l, l, 1.0)
    assert torch.isfinite(z[0, :2]).all() and torch.isneginf(z[0, 2])


# ---- §8.3 equivalences on the model ------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_alpha0_beta0_is_vanilla_bit_identical(tiny_adapter, inputs, strategy):
    # Separate branches: the main stream runs exactly vanilla's ops. (A 2-row batch gives the same
    # values only up to ~1e-5 on CPU, see test_batched_alpha0_is_vanilla.)
    gen = gen_config(strategy, n=8)
    ref = run_method(Vanilla(), tiny_adapter, inputs, gen)
    vcd = run_method(VCD(alpha=0.0, beta=0.0, batched=False), tiny_adapter, inputs, gen)
    assert vcd.tokens == ref.tokens
    assert len(vcd.z) == len(ref.z)
    for a, b in zip(vcd.z, ref.z):
        assert torch.equal(a, b)


def test_batched_alpha0_is_vanilla(tiny_adapter, inputs):
    gen = gen_config("greedy", n=8)
    ref = run_method(Vanilla(), tiny_adapter, inputs, gen)
    vcd = run_method(VCD(alpha=0.0, beta=0.0, batched=True), tiny_adapter, inputs, gen)
    assert margins_ok(ref.z)
    assert vcd.tokens == ref.tokens
    assert_scores_close(vcd.z, ref.z)


def test_alpha0_beta01_gives_vanilla_tokens_greedy(tiny_adapter, inputs):
    gen = gen_config("greedy", n=10)
    ref = run_method(Vanilla(), tiny_adapter, inputs, gen)
    vcd = run_method(VCD(alpha=0.0, beta=0.1), tiny_adapter, inputs, gen)
    assert vcd.tokens == ref.tokens
    assert any(torch.isneginf(z).any() for z in vcd.z)  # the cutoff was active


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_batched_equals_separate(tiny_adapter, inputs, strategy):
    gen = gen_config(strategy, n=8)
    sep = run_method(VCD(batched=False), tiny_adapter, inputs, gen)
    bat = run_method(VCD(batched=True), tiny_adapter, inputs, gen)
    assert sep.tokens == bat.tokens
    assert_scores_close(bat.z, sep.z)
    assert all(torch.equal(a, b) for a, b in zip(sep.recorder.beam_idx, bat.recorder.beam_idx))
    # The contrast is real: VCD scores are not vanilla's.
    ref = run_method(Vanilla(), tiny_adapter, inputs, gen)
    assert not torch.allclose(sep.z[0], ref.z[0])


@pytest.mark.parametrize("batched", [False, True])
def test_contrast_branch_has_its_own_cache_and_sees_the_noised_image(tiny_adapter, inputs, batched):
    seen = []

    def after(stepper):
        main_cache, cd_cache = stepper.caches
        seen.append((main_cache, cd_cache, stepper.last_logits.clone(), stepper.last_contrast_logits.clone()))

    run = run_method(VCD(batched=batched), tiny_adapter, inputs, gen_config("greedy", n=6), after=after)
    stepper = run.stepper
    if not batched:
        assert stepper.main.cache is not stepper.contrast.cache
        assert all(m is not c for m, c, _, _ in seen)
    assert len(seen) == len(run.tokens)
    prompt = inputs.input_ids
    with torch.inference_mode():
        for t, (_, _, main_logits, cd_logits) in enumerate(seen):
            ids = torch.cat([prompt, torch.tensor([run.tokens[:t]], dtype=torch.long)], dim=1)
            fresh = tiny_adapter.forward(cache=tiny_adapter.new_cache(), input_ids=ids, pixel_values=stepper.pixel_values_cd)
            assert torch.allclose(cd_logits, tiny_adapter.last_logits(fresh), rtol=1e-4, atol=1e-4), t
            clean = tiny_adapter.forward(cache=tiny_adapter.new_cache(), input_ids=ids, pixel_values=inputs.pixel_values)
            assert torch.allclose(main_logits, tiny_adapter.last_logits(clean), rtol=1e-4, atol=1e-4), t
            # The loop's scores from these fresh forwards by VCD eq. (3)–(4), in probability form:
            # (1+α)·l − α·l_cd with α = 1, removed where p_clean < β·max p_clean (β = 0.1).
            l, l_cd = tiny_adapter.last_logits(clean)[0], tiny_adapter.last_logits(fresh)[0]
            p = torch.softmax(l, dim=-1)
            want = torch.where(p < 0.1 * p.max(), float("-inf"), 2.0 * l - l_cd)
            got = run.z[t][0]
            assert torch.equal(torch.isinf(got), torch.isinf(want)), t
            fin = torch.isfinite(want)
            assert torch.allclose(got[fin], want[fin], rtol=1e-4, atol=2e-4), t
            # A shared (clean) cache would make these equal after the first token.
            assert not torch.allclose(cd_logits, main_logits, rtol=1e-3, atol=1e-3), t


@pytest.mark.parametrize("batched", [False, True])
def test_beam_reorder_matches_a_single_row_replay(tiny_adapter, inputs, batched):
    def rows(st, row):
        return {"main": st.last_logits[row], "contrast": st.last_contrast_logits[row]}

    assert check_beam_replay(VCD(batched=batched), tiny_adapter, inputs, gen_config("beam", n=6), rows) >= 1


def test_beam1_equals_greedy(tiny_adapter, inputs):
    greedy = run_method(VCD(), tiny_adapter, inputs, gen_config("greedy", n=8))
    beam1 = run_method(VCD(), tiny_adapter, inputs, gen_config("beam", n=8, beams=1))
    assert beam1.tokens == greedy.tokens


def test_sampling_is_per_sample_reproducible(tiny_adapter, inputs):
    a = run_method(VCD(), tiny_adapter, inputs, gen_config("sample", n=8), sample_id="x")
    b = run_method(VCD(), tiny_adapter, inputs, gen_config("sample", n=8), sample_id="x")
    assert a.tokens == b.tokens and torch.equal(a.stepper.pixel_values_cd, b.stepper.pixel_values_cd)


def test_336px_shapes(tiny_adapter_336, test_image, caption_prompt):
    inp = tiny_adapter_336.prepare(test_image, caption_prompt)
    assert inp.n_image_tokens == 576
    run = run_method(VCD(), tiny_adapter_336, inp, gen_config("beam", n=3, beams=2))
    st = run.stepper
    assert st.pixel_values_cd.shape == inp.pixel_values.shape == (1, 3, 336, 336)
    assert st.last_logits.shape == st.last_contrast_logits.shape == (2, tiny_adapter_336.lm_head.out_features)
    assert st.pair.cache.get_seq_length() == inp.length + len(run.z) - 1


# ---- config -----------------------------------------------------------------------------------
def test_config_builds_with_the_documented_defaults():
    m = build_method(compose(["method=vcd"]))
    assert isinstance(m, VCD)
    assert m.fingerprint() == {"method": "vcd", "alpha": 1.0, "beta": 0.1, "noise_step": 500, "batched": True}


@pytest.mark.parametrize(
    "kw, key",
    [({"alpha": -1.0}, "method.alpha"), ({"beta": 1.5}, "method.beta"), ({"noise_step": 1000}, "method.noise_step"),
     ({"noise_step": 2.5}, "method.noise_step"), ({"batched": "yes"}, "method.batched")],
)  # fmt: skip
def test_bad_values_name_their_key(kw, key):
    with pytest.raises(ConfigError) as exc:
        VCD(**kw).check(gen_config())
    assert exc.value.key == key
