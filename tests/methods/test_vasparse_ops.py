"""VASparse math against hand computations on small fixed tensors (methods.md §6.1–6.4, §8.5)."""

from __future__ import annotations

import math

import pytest
import torch

from methods.vasparse_cluster import cluster_count, dpc_knn, merge_clusters, redistribute
from methods.vasparse_sap import grow, penalise, prefill_accumulator, sink_weights
from methods.vasparse_select import candidate_positions, n_kept, saliency_probs, select_dropped, vats_scores
from vh_bench.decoding.contrast import contrast_scores


# ---- candidates and counts ---------------------------------------------------------------------
def test_candidate_scopes_never_include_the_current_key():
    # N = 20 keys, prompt of 12 with the image at positions 2…5
    gen = candidate_positions("generated", 20, 12, 2, 4)
    text = candidate_positions("text", 20, 12, 2, 4)
    every = candidate_positions("all", 20, 12, 2, 4)
    assert gen.tolist() == list(range(12, 19))
    assert text.tolist() == [0, 1] + list(range(6, 19))
    assert every.tolist() == list(range(19))
    assert candidate_positions("generated", 13, 12, 2, 4).tolist() == []  # first decode step: none yet


def test_keep_count():
    assert n_kept(10, 0.9) == 9
    assert n_kept(9, 0.9) == 9  # ceil(8.1) = 9: nothing dropped below n = 10
    assert n_kept(64, 0.9) == 58
    assert n_kept(10, 1.0) == 10
    assert n_kept(30, 0.9) == 27  # 0.9·30 = 27.000000000000004 in floats: the epsilon keeps it 27


# ---- δ and selection ---------------------------------------------------------------------------
def hand_delta(s: torch.Tensor, p: torch.Tensor, lam: float, normalize: str) -> torch.Tensor:
    a, b = s * s, p.expand_as(s)
    if normalize == "sum":
        a, b = a / a.sum(), b / b.sum()
    return a + lam * b


def test_selection_keeps_the_top_nine_of_ten_by_delta():
    s = torch.tensor([[[0.5, -2.0, 1.0, 0.1, 3.0, -0.2, 0.7, 1.5, -1.1, 0.3]]])  # (R=1, H=1, n=10)
    p = torch.tensor([[0.05, 0.01, 0.2, 0.3, 0.02, 0.02, 0.1, 0.1, 0.1, 0.1]])  # (R=1, n)
    for lam, normalize in [(0.1, "sum"), (0.1, "none"), (0.0, "sum"), (5.0, "sum")]:
        delta = vats_scores(s, p, lam, normalize)
        assert torch.allclose(delta[0, 0], hand_delta(s[0, 0], p[0], lam, normalize))
        dropped = select_dropped(delta, n_kept(10, 0.9))
        assert dropped.shape == (1, 1, 1)
        assert int(dropped) == int(torch.argmin(delta[0, 0]))
        kept = sorted(set(range(10)) - {int(dropped)})
        assert sorted(torch.topk(delta[0, 0], 9).indices.tolist()) == kept
    # with λ = 5 the saliency of key 3 (s = 0.1, the smallest |s|) saves it
    assert int(select_dropped(vats_scores(s, p, 0.0, "sum"), 9)) == 3
    assert int(select_dropped(vats_scores(s, p, 5.0, "sum"), 9)) != 3
    # n = 9: nothing dropped
    assert select_dropped(vats_scores(s[..., :9], p[:, :9], 0.1, "sum"), n_kept(9, 0.9)).shape[-1] == 0


def test_selection_is_per_row_and_head_and_ties_keep_the_earlier_position():
    s = torch.tensor([[[1.0, 1.0, 2.0, 2.0], [2.0, 1.0, 1.0, 2.0]], [[-3.0, 1.0, 1.0, 3.0], [0.0, 0.0, 0.0, 0.0]]])
    p = torch.full((2, 4), 0.25)
    dropped = select_dropped(vats_scores(s, p, 0.1, "sum"), 2)
    assert dropped.tolist() == [[[0, 1], [1, 2]], [[1, 2], [2, 3]]]


def test_normalize_sum_lets_lambda_change_the_selection_where_none_cannot():
    # Two candidates: s² = 9 vs 9.61, saliency 0.9 vs 0.1; keep one.
    s = torch.tensor([[[3.0, 3.1]]])
    p = torch.tensor([[0.9, 0.1]])
    drop = lambda lam, norm: int(select_dropped(vats_scores(s, p, lam, norm), n_kept(2, 0.5)))  # noqa: E731
    assert drop(0.0, "none") == 0 and drop(0.1, "none") == 0  # λ·P ≪ s² literally
    assert drop(0.0, "sum") == 0 and drop(0.1, "sum") == 1  # normalised: λ = 0.1 flips it


def test_saliency_probs_exclude_the_current_token():
    r = torch.tensor([[0.2, 0.9, 0.1, 0.5], [0.0, 0.0, 1.0, 7.0]])
    p = saliency_probs(r, 4)
    e = torch.exp(r[:, :3])
    assert torch.allclose(p, e / e.sum(dim=-1, keepdim=True))


# ---- DPC-kNN -----------------------------------------------------------------------------------
def test_dpc_knn_worked_example():
    x = torch.tensor([0.0, 0.1, 0.2, 5.0, 5.1, 5.2])[:, None]
    runs = [dpc_knn(x, 2, 2) for _ in range(3)]
    assign, centres = runs[0]
    assert centres.tolist() == [1, 4]  # 0.1 and 5.1
    assert assign.tolist() == [0, 0, 0, 1, 1, 1]
    assert all(torch.equal(a, assign) and torch.equal(c, centres) for a, c in runs)


@pytest.mark.parametrize("m, c", [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3)])
def test_cluster_count(m, c):
    assert cluster_count(m, 0.5) == c
    x = torch.arange(m, dtype=torch.float32)[:, None] ** 2
    assign, centres = dpc_knn(x, c, 5)
    assert centres.shape == (c,) and sorted(set(assign.tolist())) == list(range(c))


def test_dpc_knn_exact_ties_are_broken_by_index():
    x = torch.zeros(4, 3)  # four identical points: equal density, distance 0 everywhere
    assign, centres = dpc_knn(x, 2, 5)
    assert centres.tolist() == [0, 1]
    assert assign.tolist() == [0, 1, 0, 0]


def loop_dpc(x: torch.Tensor, c: int, k: int) -> tuple[list[int], list[int]]:
    """§6.2 step by step with Python loops, for one (row, head)."""
    m, d = x.shape
    dist = [[float(torch.linalg.vector_norm(x[a] - x[b])) / math.sqrt(d) for b in range(m)] for a in range(m)]
    kk = min(k, m - 1)
    rho = []
    for a in range(m):
        others = sorted(dist[a][b] for b in range(m) if b != a)[:kk]
        rho.append(math.exp(-sum(v * v for v in others) / kk) if kk else 1.0)
    above = lambda b, a: rho[b] > rho[a] or (rho[b] == rho[a] and b < a)  # noqa: E731
    dmax = max(max(row) for row in dist)
    eta = [min([dist[a][b] for b in range(m) if above(b, a)], default=dmax) for a in range(m)]
    gamma = [rho[a] * eta[a] for a in range(m)]
    centres = sorted(sorted(range(m), key=lambda a: (-gamma[a], a))[:c])
    assign = [centres.index(a) if a in centres else min(range(c), key=lambda j: (dist[a][centres[j]], j)) for a in range(m)]
    return assign, centres


def test_dpc_knn_matches_a_loop_implementation_batched_over_rows_and_heads():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 7, 4, generator=g)  # rows × heads × points × d
    assign, centres = dpc_knn(x, 3, 5)
    assert assign.shape == (2, 3, 7) and centres.shape == (2, 3, 3)
    for r in range(2):
        for h in range(3):
            a, c = loop_dpc(x[r, h].double(), 3, 5)
            assert assign[r, h].tolist() == a and centres[r, h].tolist() == c


# ---- merge and redistribution ------------------------------------------------------------------
def test_merge_is_the_delta_weighted_average():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0]])
    values = keys * 10
    delta = torch.tensor([1.0, 3.0, 2.0, 0.0])
    assign = torch.tensor([0, 0, 1, 2])
    mg = merge_clusters(keys, values, delta, assign, 3)
    assert torch.allclose(mg.weights, torch.tensor([0.25, 0.75, 1.0, 1.0]))  # δ-sum 0 → uniform
    assert torch.allclose(mg.keys, torch.tensor([[0.25, 0.75], [2.0, 2.0], [4.0, 0.0]]))
    assert torch.allclose(mg.values, mg.keys * 10)
    zero = merge_clusters(keys[:2], values[:2], torch.zeros(2), torch.tensor([0, 0]), 1)
    assert torch.allclose(zero.weights, torch.tensor([0.5, 0.5]))
    assert torch.allclose(mg.members @ torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.75, 3.0, 4.0]))


def test_redistribution_gives_members_their_share_and_rows_sum_to_one():
    probs = torch.tensor([0.3, 0.0, 0.2, 0.0, 0.0, 0.1])  # keys 1, 3, 4 dropped (0 after masking)
    virtual = torch.tensor([0.25, 0.15])  # two clusters: {1, 4} and {3}
    dropped = torch.tensor([1, 3, 4])
    mg = merge_clusters(torch.zeros(3, 2), torch.zeros(3, 2), torch.tensor([1.0, 5.0, 3.0]), torch.tensor([0, 1, 0]), 2)
    a_hat = redistribute(probs, dropped, mg, virtual)
    assert torch.allclose(a_hat, torch.tensor([0.3, 0.25 * 0.25, 0.2, 0.15, 0.25 * 0.75, 0.1]))
    assert float(a_hat.sum()) == pytest.approx(1.0)
    assert torch.equal(redistribute(probs, dropped, None, None), probs)


# ---- SAP ---------------------------------------------------------------------------------------
def test_sap_accumulator_weights_and_rescaling():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.6, 0.4, 0.0], [0.5, 0.2, 0.3]])[None, None]  # causal prompt rows
    c = prefill_accumulator(p)
    assert torch.allclose(c, torch.tensor([[[2.1, 0.6, 0.3]]]))
    c = grow(c, 4)
    assert c[..., 3].item() == 0.0 and c.shape[-1] == 4
    w = sink_weights(c)
    e = torch.exp(torch.tensor([2.1, 0.6, 0.3, 0.0]))
    assert torch.allclose(w[0, 0], e / e.sum())
    s = torch.tensor([[[[1.5, -0.5, 2.0, 0.25]]]])
    beta = 0.1
    assert torch.allclose(penalise(s, w[:, :, None, :], beta), (1 + beta) * s - beta * w[:, :, None, :] * s)
    assert torch.equal(penalise(s, w[:, :, None, :], 0.0), s)  # β = 0 is exact


# ---- SVCD combination --------------------------------------------------------------------------
def test_svcd_combination_and_cutoff():
    l = torch.tensor([[2.0, 1.5, -1.0, 0.0]])
    l_phi = torch.tensor([[1.0, -1.0, 0.5, 3.0]])
    z = contrast_scores(l, l_phi, 0.1, 0.1)
    expected = 1.1 * l - 0.1 * l_phi
    keep = l >= l.max() + math.log(0.1)  # p ≥ 0.1·p_max: tokens 0, 1, 3 (e^-2 > 0.1 > e^-3)
    assert keep.tolist() == [[True, True, False, True]]
    assert torch.allclose(z[keep], expected[keep]) and torch.isneginf(z[~keep]).all()
    assert torch.equal(contrast_scores(l, l_phi, 0.0, 0.0), l)
