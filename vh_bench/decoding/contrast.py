"""Contrastive logit combination with an adaptive plausibility cutoff (VCD §3.2, VASparse-SVCD §6.3).

Both methods use the same two operations on fp32 last-position logits, row by row:
    z = (1 + alpha)·l − alpha·l_contrast          (VCD eq. (3); VASparse eq. (6))
    z[v] = −inf where l[v] < max(l) + log(cutoff)  (on the *main* logits only; VCD eq. (4))
"""

from __future__ import annotations

import math

import torch


def plausibility_cutoff(z: torch.Tensor, l: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Remove tokens whose main-branch probability is below `cutoff`·p_max; `cutoff = 0` disables it.

    `l < max(l) + log(cutoff)` is the log form of `p(v) < cutoff·p_max`, so the softmax is never
    materialised and the argmax of `l` is never removed.
    """
    if cutoff <= 0:
        return z
    threshold = l.max(dim=-1, keepdim=True).values + math.log(cutoff)
    return z.masked_fill(l < threshold, float("-inf"))


def contrast_scores(l: torch.Tensor, l_contrast: torch.Tensor, alpha: float, cutoff: float) -> torch.Tensor:
    """(1+α)·l − α·l_contrast, then the plausibility cutoff on `l`. `alpha = 0` returns `l` exactly."""
    l = l.float()
    z = l if alpha == 0 else (1.0 + alpha) * l - alpha * l_contrast.float()
    return plausibility_cutoff(z, l, cutoff)
