"""DPC-kNN clustering of VATS's dropped keys and their merge into virtual keys (methods.md §6.1–6.2).

Everything is batched over leading dimensions (rows × heads): points are `(..., m, d)`. `m` and the
cluster count `c` depend only on the candidate count, so shapes are host-known and nothing syncs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from vh_bench.decoding.pruning import round_half_up


def cluster_count(m: int, cluster_ratio: float) -> int:
    """c = max(1, round_half_up(cluster_ratio·m)); m = 1…5 at ratio 0.5 → 1, 1, 2, 2, 3."""
    return max(1, round_half_up(cluster_ratio * m))


def dpc_knn(x: torch.Tensor, c: int, knn_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Density-peaks clustering with kNN density (Rodriguez & Laio 2014; TCFormer's variant).

    `x` is `(..., m, d)`, points in position order. Returns `(assign, centres)`: `assign (..., m)` is
    the cluster of each point in `0 … c−1`, clusters numbered by ascending centre index; `centres
    (..., c)` are the centres' point indices, ascending. Ties are broken by index, never at random.
    """
    x = x.float()
    m, d = x.shape[-2], x.shape[-1]
    if not 1 <= c <= m:
        raise ValueError(f"cannot make {c} clusters of {m} points")
    # 1. d_ab = ‖x_a − x_b‖₂ / √d from exact differences (symmetric, zero diagonal): the matmul
    #    shortcut ‖a‖² + ‖b‖² − 2ab would perturb exact ties and the self-distance
    dist = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(d)
    # 2. ρ_a = exp(−mean of d² to the k nearest *other* points); ρ = 1 for a single point
    k = min(knn_k, m - 1)
    if k > 0:
        eye = torch.eye(m, dtype=torch.bool, device=x.device)
        nearest = torch.topk(dist.masked_fill(eye, float("inf")), k, dim=-1, largest=False).values
        rho = torch.exp(-nearest.square().mean(dim=-1))
    else:
        rho = torch.ones(x.shape[:-1], dtype=x.dtype, device=x.device)
    # 3. strict order: b ≻ a iff ρ_b > ρ_a, or equal density and b < a
    idx = torch.arange(m, device=x.device)
    above = (rho[..., None, :] > rho[..., :, None]) | (
        (rho[..., None, :] == rho[..., :, None]) & (idx[None, :] < idx[:, None])
    )  # above[..., a, b] = b ≻ a
    # 4. η_a = min distance to a point above a; the top point gets the largest distance
    eta = dist.masked_fill(~above, float("inf")).min(dim=-1).values
    dmax = dist.flatten(-2).max(dim=-1).values
    eta = torch.where(torch.isinf(eta), dmax[..., None].expand_as(eta), eta)
    # 5. centres: the c largest γ = ρ·η, ties to the lower index (stable sort)
    gamma = rho * eta
    centres = torch.sort(gamma, dim=-1, descending=True, stable=True).indices[..., :c].sort(dim=-1).values
    # 6. nearest centre, ties to the lower centre index (argmin returns the first minimum); a centre
    #    always belongs to itself even if another centre sits at distance 0
    to_centres = torch.gather(dist, -1, centres[..., None, :].expand(*dist.shape[:-1], c))
    assign = to_centres.argmin(dim=-1)
    assign = assign.scatter(-1, centres, torch.arange(c, device=x.device).expand_as(centres).contiguous())
    return assign, centres


@dataclass
class Merge:
    """Virtual keys of one call: `keys`/`values (..., c, d)` and the weights that built them."""

    assign: torch.Tensor  # (..., m) cluster of each dropped key
    weights: torch.Tensor  # (..., m) ω_i, summing to 1 within each cluster
    keys: torch.Tensor  # (..., c, d) K̄
    values: torch.Tensor  # (..., c, d) V̄
    members: torch.Tensor  # (..., c, m) ω_i at [cluster(i), i]: `members @ per_key` averages per cluster


def merge_clusters(
    keys: torch.Tensor, values: torch.Tensor, delta: torch.Tensor, assign: torch.Tensor, c: int
) -> Merge:
    """K̄ = Σ ω_i K_i, V̄ = Σ ω_i V_i, ω_i = δ_i / Σ_cluster δ (uniform when the cluster's δ sum is 0).

    The paper "sums" the clustered tokens; a sum would inflate dot products by the cluster size, so
    the project uses the δ-weighted average (methods.md §6.1, Decision). `keys`/`values (..., m, d)`.
    """
    delta = delta.float()
    onehot = (assign[..., None, :] == torch.arange(c, device=assign.device)[:, None]).float()  # (..., c, m)
    sums = torch.einsum("...cm,...m->...c", onehot, delta)
    sizes = onehot.sum(dim=-1)
    w_sum = torch.gather(sums, -1, assign)
    w_size = torch.gather(sizes, -1, assign)
    weights = torch.where(w_sum > 0, delta / w_sum.clamp_min(1e-30), 1.0 / w_size)
    mat = onehot * weights[..., None, :]
    return Merge(assign, weights, mat @ keys.float(), mat @ values.float(), mat)


def merge_one_cluster(keys: torch.Tensor, values: torch.Tensor, delta: torch.Tensor) -> Merge:
    """`merge_clusters` when every dropped key forms one cluster (c = 1: |D| = 1 or 2 at ratio 0.5).

    DPC-kNN has nothing to decide then, so no distances are computed; same weights and averages.
    """
    delta = delta.float()
    m = delta.shape[-1]
    total = delta.sum(dim=-1, keepdim=True)
    weights = torch.where(total > 0, delta / total.clamp_min(1e-30), 1.0 / m)
    mat = weights[..., None, :]  # (..., 1, m)
    assign = torch.zeros(delta.shape, dtype=torch.long, device=delta.device)
    return Merge(assign, weights, mat @ keys.float(), mat @ values.float(), mat)


def redistribute(
    probs: torch.Tensor, dropped: torch.Tensor, merge: Merge | None, virtual_probs: torch.Tensor | None
) -> torch.Tensor:
    """â over the real keys: a dropped key i gets p̄_{c(i)}·ω_i, every other key its own p (§6.1).

    `probs (..., N)` are the real columns as produced (dropped ones exactly 0), `dropped (..., m)` key
    positions, `virtual_probs (..., c)`. Without a merge the dropped keys keep their 0.
    """
    if merge is None or dropped.shape[-1] == 0:
        return probs
    share = torch.gather(virtual_probs, -1, merge.assign) * merge.weights
    return probs.scatter(-1, dropped, share.to(probs.dtype))
