"""Every method with its knobs zeroed, and the check that it is vanilla bit for bit (issue 19, item 2).

Shared by tests/methods/test_zeroed_identity.py (tiny model) and tests/models/test_fullwidth.py
(LLaVA-1.5-7B widths). "Bit for bit" is `torch.equal` on the main branch's logits at every step and
on the tokens, against a vanilla run on the same adapter, inputs and decoding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from methods.fastv import FastV
from methods.topk import TopK
from methods.vanilla import Vanilla
from methods.vasparse import VASparse
from methods.vcd import VCD
from tests.stepping import run_method
from vh_bench.decoding.method import Method
from vh_bench.records import GenConfig

VASPARSE_ZERO = dict(sparsity=1.0, lam=0.0, alpha=0.0, beta=0.0)

# name → method with its knobs zeroed. The cutoffs stay at their defaults where they do not touch
# the logits (they only set −inf entries of z, compared separately).
ZEROED: dict[str, Callable[[], Method]] = {
    "vasparse": lambda: VASparse(**VASPARSE_ZERO, kernel="torch"),
    "vasparse_no_cutoff": lambda: VASparse(**VASPARSE_ZERO, svcd={"plausibility": 0.0}, kernel="torch"),
    "vasparse_lam_with_S1": lambda: VASparse(**{**VASPARSE_ZERO, "lam": 0.1}, kernel="torch"),  # S = 1: λ cannot act
    "vasparse_svcd_layers": lambda: VASparse(**VASPARSE_ZERO, svcd={"stop_layer": 1}, kernel="torch"),
    "vcd_batched": lambda: VCD(alpha=0.0, beta=0.0, batched=True),
    "vcd_separate": lambda: VCD(alpha=0.0, beta=0.0, batched=False),
    "vcd_cutoff": lambda: VCD(alpha=0.0, beta=0.1),
    "fastv": lambda: FastV(ratio=0.0),
    "topk": lambda: TopK(keep_ratio=1.0),
}
# With a plausibility cutoff left on, z has −inf entries: greedy still picks vanilla's token, but beam
# search and sampling then rank a truncated distribution (that is the method, not a rounding).
CUTOFF_ON = frozenset({"vasparse", "vasparse_lam_with_S1", "vasparse_svcd_layers", "vcd_cutoff"})


def main_logits(method: Method, adapter, inputs, gen: GenConfig) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
    """(tokens, main-branch logits per step, scores z per step) of one recorded run."""
    seen: list[torch.Tensor] = []

    def after(stepper) -> None:
        last = getattr(stepper, "last_logits", None)
        if last is not None:
            seen.append(last.clone())

    run = run_method(method, adapter, inputs, gen, after=after)
    return run.tokens, (seen or list(run.z)), list(run.z)


def assert_bitwise_vanilla(name: str, adapter, inputs, gen: GenConfig, reference=None) -> None:
    """`reference`: vanilla's `main_logits` for the same arguments, if already computed."""
    ref_tokens, ref_logits, _ = reference or main_logits(Vanilla(), adapter, inputs, gen)
    tokens, logits, z = main_logits(ZEROED[name](), adapter, inputs, gen)
    assert tokens == ref_tokens, name
    assert len(logits) == len(ref_logits), name
    for t, (a, b) in enumerate(zip(logits, ref_logits)):
        assert torch.equal(a, b), f"{name}: step {t} differs by {float((a - b).abs().max())}"
    for a, b in zip(z, ref_logits):  # z is l where finite, −inf only where a cutoff removed a token
        fin = torch.isfinite(a)
        assert torch.equal(a[fin], b[fin]) and (a[~fin] == float("-inf")).all(), name
