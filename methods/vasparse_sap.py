"""Sink-attention penalty (VASparse eq. (7); methods.md §6.4) as pure tensor functions.

`c (R, H, N)` is, per key, the attention it has received summed over every query row processed so
far (fp32, after any VATS modification and redistribution). Only decode steps are penalised.
"""

from __future__ import annotations

import torch


def prefill_accumulator(probs: torch.Tensor) -> torch.Tensor:
    """Column sums of the prompt's causal attention `(R, H, L, L)` → `(R, H, L)`."""
    return probs.float().sum(dim=-2)


def grow(c: torch.Tensor, n_keys: int) -> torch.Tensor:
    """Append zero entries up to `n_keys` (the current key has received nothing yet)."""
    missing = n_keys - c.shape[-1]
    if missing <= 0:
        return c
    return torch.cat([c, c.new_zeros(*c.shape[:-1], missing)], dim=-1)


def sink_weights(c: torch.Tensor) -> torch.Tensor:
    """w = softmax_j(c_j) over all keys (eq. (7)); close to one-hot on the strongest sink."""
    return torch.softmax(c.float(), dim=-1)


def penalise(s: torch.Tensor, w: torch.Tensor, beta: float) -> torch.Tensor:
    """(1+β)·s − β·w⊙s = s·(1 + β − β·w), on fp32 pre-mask scores; β = 0 is exactly the identity."""
    return s * (1.0 + beta - beta * w)
