"""Zeroed knobs take the plain path, so each method equals vanilla bit for bit (issue 19, item 2).

In float32 and bfloat16 on the default sdpa backend: no explicit-path layer (its op order rounds
differently from sdpa), no 2-row batch (the batch rounds the main row differently), no contrast
stream. The control shows the check is sharp: forcing the old behaviour (SAP's explicit path with
β = 0) moves bfloat16 logits although the math is the same.
"""

from __future__ import annotations

import pytest
import torch

import methods.vasparse as vasparse_module
from methods.vanilla import Vanilla
from methods.vasparse import Roles, VASparse
from tests.conftest import tiny_checkpoint
from tests.stepping import gen_config
from tests.zeroed import CUTOFF_ON, VASPARSE_ZERO, ZEROED, assert_bitwise_vanilla, main_logits
from vh_bench.models.llava import LlavaAdapter


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def adapter_and_inputs(request, test_image, caption_prompt):
    adapter = LlavaAdapter.load(tiny_checkpoint(), dtype=request.param)
    return adapter, adapter.prepare(test_image, caption_prompt)


# Beam search too, except where a plausibility cutoff is left on (it changes beam search by design).
CASES = [(n, s) for n in sorted(ZEROED) for s in ("greedy", "beam") if s == "greedy" or n not in CUTOFF_ON]


@pytest.mark.parametrize(("name", "strategy"), CASES)
def test_zeroed_method_is_vanilla_bit_for_bit(adapter_and_inputs, name, strategy):
    adapter, inputs = adapter_and_inputs
    assert_bitwise_vanilla(name, adapter, inputs, gen_config(strategy, n=6))


def test_zeroed_vasparse_runs_no_handler_and_no_contrast(tiny_adapter, inputs):
    run_roles = vasparse_module.active_roles(VASparse(**VASPARSE_ZERO), tiny_adapter.n_layers)
    assert run_roles == Roles(frozenset(), frozenset(), None, False)
    # each knob alone switches only its own component off
    full = vasparse_module.active_roles(VASparse(), 4)
    assert full == Roles(frozenset(range(4)), frozenset(range(4)), 3, True)
    assert vasparse_module.active_roles(VASparse(beta=0.0), 4) == Roles(frozenset(range(4)), frozenset(), 3, True)
    assert vasparse_module.active_roles(VASparse(lam=0.0), 4) == Roles(frozenset(range(4)), frozenset(range(4)), None, True)
    assert vasparse_module.active_roles(VASparse(sparsity=1.0), 4) == Roles(frozenset(), frozenset(range(4)), None, True)
    assert vasparse_module.active_roles(VASparse(alpha=0.0), 4) == Roles(frozenset(range(4)), frozenset(range(4)), 3, False)


def test_control_the_explicit_path_with_beta_0_is_not_bitwise_in_bfloat16(test_image, caption_prompt, monkeypatch):
    """The old behaviour (SAP on with β = 0: every prefill layer on the explicit path) differs."""
    adapter = LlavaAdapter.load(tiny_checkpoint(), dtype="bfloat16")
    inputs = adapter.prepare(test_image, caption_prompt)
    n = adapter.n_layers
    monkeypatch.setattr(
        vasparse_module, "active_roles", lambda method, n_layers: Roles(frozenset(), frozenset(range(n)), None, False)
    )
    gen = gen_config("greedy", n=4)
    _, ref, _ = main_logits(Vanilla(), adapter, inputs, gen)
    _, got, _ = main_logits(VASparse(**VASPARSE_ZERO, kernel="torch"), adapter, inputs, gen)
    diff = max(float((a - b).abs().max()) for a, b in zip(got, ref))
    print(f"explicit-path SAP with beta=0 vs vanilla, bfloat16: max |dlogit| = {diff:.3g}")
    assert diff > 0
