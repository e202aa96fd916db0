"""VATS key selection (VASparse eq. (4)–(5); methods.md §6.1) as pure tensor functions.

Shapes: `R` rows (beams), `H` heads, `N` keys of a full-length layer during a decode step (the current
token's own key is `N−1`), `n` candidates. Candidate sets and counts depend only on `N` and the
prompt layout, so they are known on the host and no function here synchronises with the device.
"""

from __future__ import annotations

import math

import torch

from methods.settings import NORMALIZE, SCOPES



def candidate_positions(scope: str, n_keys: int, prompt_len: int, image_start: int, n_image: int) -> torch.Tensor:
    """Key positions that may be dropped, ascending. The current key `n_keys−1` is never one (§6.1).

    `generated`: L … N−2; `text`: non-image positions < N−1; `all`: every position < N−1.
    """
    last = n_keys - 1
    if scope == "generated":
        return torch.arange(min(prompt_len, last), last)
    if scope == "text":
        before = torch.arange(0, min(image_start, last))
        after = torch.arange(min(image_start + n_image, last), last)
        return torch.cat([before, after])
    if scope == "all":
        return torch.arange(0, last)
    raise ValueError(f"unknown VATS scope {scope!r}; one of {SCOPES}")


def n_kept(n: int, sparsity: float) -> int:
    """min(n, ceil(S·n)) with the project's float-safe ceil (methods.md §0)."""
    return min(n, math.ceil(sparsity * n - 1e-9))


def saliency_probs(r: torch.Tensor, n_keys: int) -> torch.Tensor:
    """P = softmax(r_0 … r_{N−2}) over every token already processed (the current one excluded)."""
    return torch.softmax(r[:, : n_keys - 1].float(), dim=-1)


def vats_scores(s_cand: torch.Tensor, p_cand: torch.Tensor, lam: float, normalize: str) -> torch.Tensor:
    """δ_i = A_i + λ·B_i with A_i = s_i² (raw scaled score) and B_i = P_i (eq. (4)).

    `s_cand` is `(R, H, n)` fp32, `p_cand` `(R, n)` (P is shared by the heads of a row). With
    `normalize="sum"` both terms are divided by their sum over the candidates first, so λ weighs
    saliency against query relevance instead of being swamped by the O(1…1e3) scale of s².
    """
    # The decode path computes λ·B once per step (`saliency_term`) and A per head (`vats_delta`).
    return vats_delta(s_cand, saliency_term(p_cand, lam, normalize)[:, None, :], normalize)


def saliency_term(p_cand: torch.Tensor, lam: float, normalize: str) -> torch.Tensor:
    """λ·B of δ for `p_cand (R, n)`: the part of `vats_scores` that is the same for every head and
    every VATS layer of a step, so a decode step computes it once."""
    b = p_cand.float()
    if normalize == "sum":
        b = b / b.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    elif normalize != "none":
        raise ValueError(f"unknown VATS normalisation {normalize!r}; one of {NORMALIZE}")
    return lam * b


def vats_delta(s_cand: torch.Tensor, term: torch.Tensor | None, normalize: str) -> torch.Tensor:
    """`vats_scores` with the saliency part precomputed: `term (R, 1, n)` from `saliency_term`, or
    None for λ = 0 (then δ = A, exactly what `A + 0·B` gives)."""
    a = s_cand.float().square()
    if normalize == "sum":
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return a if term is None else a + term


def select_dropped(delta: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices (into the candidates) of the `n − n_keep` smallest δ per row and head, ascending.

    A stable descending sort keeps the larger δ first and, among equal δ, the earlier position, so
    ties are decided by position and never by the sort kernel.
    """
    order = torch.sort(delta, dim=-1, descending=True, stable=True).indices
    return order[..., n_keep:].sort(dim=-1).values
