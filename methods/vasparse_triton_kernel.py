"""VASparse's decode-step attention of one decoder layer as one Triton kernel (methods.md §6.5).

Imported only by `methods.vasparse_triton` (it needs `triton`; under `TRITON_INTERPRET=1`, which
must be set before this import, it runs on a CPU). One program per (row r, head h) computes, with N
keys, candidates [start, start + n), m dropped keys and c clusters, fp32 throughout:
  1. s_j = scaling · q·K_j
  2. VATS, eq. (4)–(5): δ_i = A_i + λB_i on the raw s (A = s², /Σ with `normalize=sum`); D = the m
     smallest δ (ties: the later position first, i.e. a stable descending sort keeps the earlier):
     distinct 64-bit keys (order-preserving bits of δ, then the reversed position), D = the keys of
     rank < m (ranks by comparison, no sort). D's positions (ascending) and δ go through the
     `dropped` and scratch buffers to reach the (m,)-shaped block of the merge.
     DPC-kNN (methods/vasparse_cluster.py::dpc_knn) on D's keys: distances ‖K_a − K_b‖/√d from
     exact differences; ρ from the k nearest other points; η, γ = ρ·η; centres = the c largest γ
     (ties to the lower index), clusters numbered by ascending centre; nearest centre, first minimum,
     a centre in its own cluster. ω_i = δ_i / Σ_cluster δ (uniform when 0); s̄ = scaling · q·K̄.
  3. SAP, eq. (7): w = softmax(c_acc) (entries past the accumulator's length are 0: the grown ones);
     s ← s·(1+β−βw), s̄ ← s̄·(1+β−βw̄), w̄ = Σ ω_i w_{D_i}
  4. s[D] = finfo(float32).min; p = softmax over [s, s̄]
  5. â = p with dropped key i given p̄_{c(i)}·ω_i (written to `a_hat`); out = â·V (equal to
     p·V + p̄·V̄, since V̄ = Σ ω_i V_i: one pass over V and no V̄); c_acc' = c_acc + â into a new
     buffer; saliency: Σ_{k∈image} â_k per (r, h).
Steps that read what another thread of the program wrote (D's positions, â's dropped entries) are
separated by `tl.debug_barrier()`: one program is one thread block, so the barrier makes the global
writes visible. tests/methods/test_vasparse_triton.py holds this equal to the reference path.
"""

from __future__ import annotations

import triton
import triton.language as tl

DROPPED = -3.4028234663852886e38  # torch.finfo(torch.float32).min
INT64_MAX = 9223372036854775807


@triton.jit
def vasparse_decode_kernel(
    q_ptr, k_ptr, v_ptr, acc_in_ptr, acc_out_ptr, term_ptr,
    out_ptr, ahat_ptr, drop_ptr, dscr_ptr, kscr_ptr, img_ptr, wmax_ptr,
    sq_r, sq_h, sk_r, sk_h, sk_n, sv_r, sv_h, sv_n,
    H, GROUPS, N, N_ACC,
    scaling, beta, one_plus_beta, root_d,
    start, n_cand, m, n_clusters, knn_k, image_start, n_image,
    D: tl.constexpr, KNN: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr,
    DC: tl.constexpr, RC: tl.constexpr, VATS: tl.constexpr, MERGE: tl.constexpr, NORM_SUM: tl.constexpr,
    HAS_TERM: tl.constexpr, SAP: tl.constexpr, SALIENCY: tl.constexpr, RECORD: tl.constexpr,
):  # fmt: skip
    rh = tl.program_id(0)
    r = rh // H
    h = rh % H
    g = h // GROUPS
    q_base = q_ptr + r * sq_r + h * sq_h
    k_base = k_ptr + r * sk_r + g * sk_h
    v_base = v_ptr + r * sv_r + g * sv_h
    j = tl.arange(0, BLOCK_N)
    jm = j < N

    # 1. raw scores
    s = tl.zeros([BLOCK_N], dtype=tl.float32)
    for t0 in range(0, D, BLOCK_D):
        t = t0 + tl.arange(0, BLOCK_D)
        tm = t < D
        qc = tl.load(q_base + t, mask=tm, other=0.0).to(tl.float32)
        kc = tl.load(k_base + j[:, None] * sk_n + t[None, :], mask=jm[:, None] & tm[None, :], other=0.0).to(tl.float32)
        s += tl.sum(kc * qc[None, :], axis=1)
    s = s * scaling

    # 2. VATS selection
    dropped = j < 0  # all False
    i = tl.arange(0, BLOCK_M)
    im = i < m
    pos = tl.zeros([BLOCK_M], dtype=tl.int64)
    if VATS:
        cm = (j >= start) & (j < start + n_cand)
        a = s * s
        if NORM_SUM:
            total = tl.sum(tl.where(cm, a, 0.0), axis=0)
            a = a / tl.maximum(total, 1e-12)
        if HAS_TERM:
            a = a + tl.load(term_ptr + r * n_cand + (j - start), mask=cm, other=0.0)
        delta = a
        bits = delta.to(tl.int32, bitcast=True)
        okey = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # signed-int order = float order
        okey = tl.where(delta != delta, 0x7FFFFFFF, okey)  # NaN last: kept, as a descending sort keeps it
        key = (okey.to(tl.int64) << 32) + (2147483647 - j).to(tl.int64)  # equal δ: later position first
        key = tl.where(cm, key, INT64_MAX)
        # rank of each key among the candidates (keys are distinct): D = the m smallest. Compared
        # chunk by chunk against the keys as stored, which bounds the (BLOCK_N, RC) block.
        tl.store(kscr_ptr + rh * BLOCK_N + j, key)
        tl.debug_barrier()
        rank = tl.zeros([BLOCK_N], dtype=tl.int32)
        for c0 in range(0, BLOCK_N, RC):
            other = tl.load(kscr_ptr + rh * BLOCK_N + c0 + tl.arange(0, RC))
            rank += tl.sum((other[None, :] < key[:, None]).to(tl.int32), axis=1)
        dropped = cm & (rank < m)
        slot = tl.cumsum(dropped.to(tl.int32), axis=0) - 1  # rank among D, ascending position
        tl.store(drop_ptr + rh * m + slot, j.to(tl.int64), mask=dropped)
        tl.store(dscr_ptr + rh * m + slot, delta, mask=dropped)
        tl.debug_barrier()
        pos = tl.load(drop_ptr + rh * m + i, mask=im, other=0)

    # 2b. DPC-kNN merge into virtual keys
    cj = tl.arange(0, BLOCK_C)
    cmask = cj < n_clusters
    W = tl.zeros([BLOCK_M, BLOCK_C], dtype=tl.float32)  # ω_i at [i, cluster(i)]
    sbar = tl.zeros([BLOCK_C], dtype=tl.float32)
    if MERGE:
        d_drop = tl.load(dscr_ptr + rh * m + i, mask=im, other=0.0)
        ii = i[:, None]
        bb = i[None, :]
        pm = im[:, None] & im[None, :]
        sq = tl.zeros([BLOCK_M, BLOCK_M], dtype=tl.float32)
        for t0 in range(0, D, DC):
            t = t0 + tl.arange(0, DC)
            tm = t < D
            xa = tl.load(k_base + pos[:, None] * sk_n + t[None, :], mask=im[:, None] & tm[None, :], other=0.0).to(tl.float32)
            diff = xa[:, None, :] - xa[None, :, :]
            sq += tl.sum(diff * diff, axis=2)
        dist = tl.sqrt(sq) / root_d
        k_nn = tl.minimum(knn_k, m - 1)
        others = tl.where(pm & (ii != bb), dist, float("inf"))
        near = tl.zeros([BLOCK_M], dtype=tl.float32)
        for it in range(0, KNN):  # KNN = method.vats.knn_k; iterations past m − 1 add nothing
            nearest = tl.min(others, axis=1)
            near += tl.where(it < k_nn, nearest * nearest, 0.0)
            first = tl.argmin(others, axis=1)
            others = tl.where(bb == first[:, None], float("inf"), others)
        rho = tl.where(k_nn > 0, tl.exp(-(near / tl.maximum(k_nn, 1).to(tl.float32))), 1.0)
        r_a = rho[:, None]
        r_b = rho[None, :]
        above = ((r_b > r_a) | ((r_b == r_a) & (bb < ii))) & pm  # above[a, b]: b ≻ a
        eta = tl.min(tl.where(above, dist, float("inf")), axis=1)
        dmax = tl.max(tl.max(tl.where(pm, dist, -float("inf")), axis=1), axis=0)
        eta = tl.where(eta == float("inf"), dmax, eta)
        gamma = rho * eta
        g_a = gamma[:, None]
        g_b = gamma[None, :]
        g_rank = tl.sum((((g_b > g_a) | ((g_b == g_a) & (bb < ii))) & pm).to(tl.int32), axis=1)
        centre = im & (g_rank < n_clusters)
        cid = tl.sum((centre[None, :] & (bb < ii)).to(tl.int32), axis=1)  # centres before a
        to_centre = tl.where(centre[None, :] & pm, dist, float("inf"))
        closest = tl.min(to_centre, axis=1)
        best = tl.min(tl.where(to_centre == closest[:, None], bb, BLOCK_M), axis=1)  # first minimum
        assign = tl.sum(tl.where(bb == best[:, None], cid[None, :], 0), axis=1)
        assign = tl.where(centre, cid, assign)
        onehot = (assign[:, None] == cj[None, :]) & im[:, None]  # (M, C)
        sums = tl.sum(tl.where(onehot, d_drop[:, None], 0.0), axis=0)
        sizes = tl.sum(onehot.to(tl.float32), axis=0)
        w_sum = tl.sum(tl.where(onehot, sums[None, :], 0.0), axis=1)
        w_size = tl.sum(tl.where(onehot, sizes[None, :], 0.0), axis=1)
        omega = tl.where(w_sum > 0, d_drop / tl.maximum(w_sum, 1e-30), 1.0 / tl.maximum(w_size, 1.0))
        W = tl.where(onehot, omega[:, None], 0.0)
        for t0 in range(0, D, DC):
            t = t0 + tl.arange(0, DC)
            tm = t < D
            xk = tl.load(k_base + pos[:, None] * sk_n + t[None, :], mask=im[:, None] & tm[None, :], other=0.0).to(tl.float32)
            qc = tl.load(q_base + t, mask=tm, other=0.0).to(tl.float32)
            k_bar = tl.sum(W[:, :, None] * xk[:, None, :], axis=0)  # (C, DC)
            sbar += tl.sum(k_bar * qc[None, :], axis=1)
        sbar = sbar * scaling

    # 3. SAP
    acc = tl.zeros([BLOCK_N], dtype=tl.float32)
    if SAP:
        acc = tl.load(acc_in_ptr + rh * N_ACC + j, mask=j < N_ACC, other=0.0)
        acc_m = tl.where(jm, acc, -float("inf"))
        a_max = tl.max(acc_m, axis=0)
        a_exp = tl.exp(acc_m - a_max)
        a_sum = tl.sum(a_exp, axis=0)
        w = a_exp / a_sum
        s = s * (one_plus_beta - beta * w)
        if RECORD:
            tl.store(wmax_ptr + rh, tl.max(tl.where(jm, w, -float("inf")), axis=0))
        if MERGE:
            acc_d = tl.load(acc_in_ptr + rh * N_ACC + pos, mask=im & (pos < N_ACC), other=0.0)
            w_d = tl.exp(acc_d - a_max) / a_sum  # = w at D, the same formula on the same values
            w_bar = tl.sum(W * w_d[:, None], axis=0)
            sbar = sbar * (one_plus_beta - beta * w_bar)

    # 4. mask D, softmax over real and virtual keys
    s = tl.where(dropped, DROPPED, s)
    s = tl.where(jm, s, -float("inf"))
    mx = tl.max(s, axis=0)
    if MERGE:
        mx = tl.maximum(mx, tl.max(tl.where(cmask, sbar, -float("inf")), axis=0))
    e = tl.exp(s - mx)
    tot = tl.sum(e, axis=0)
    e_bar = tl.zeros([BLOCK_C], dtype=tl.float32)
    if MERGE:
        e_bar = tl.where(cmask, tl.exp(sbar - mx), 0.0)
        tot += tl.sum(e_bar, axis=0)
    p = e / tot
    tl.store(ahat_ptr + rh * N + j, p, mask=jm)

    # 5. â, output, accumulators, saliency
    if MERGE:
        share = tl.sum(W * (e_bar / tot)[None, :], axis=1)  # p̄_{c(i)}·ω_i (one non-zero term)
        tl.debug_barrier()
        tl.store(ahat_ptr + rh * N + pos, share, mask=im)
        tl.debug_barrier()
        p = tl.load(ahat_ptr + rh * N + j, mask=jm, other=0.0)
    for t0 in range(0, D, BLOCK_D):
        t = t0 + tl.arange(0, BLOCK_D)
        tm = t < D
        vc = tl.load(v_base + j[:, None] * sv_n + t[None, :], mask=jm[:, None] & tm[None, :], other=0.0).to(tl.float32)
        o = tl.sum(vc * p[:, None], axis=0)
        tl.store(out_ptr + rh * D + t, o, mask=tm)
    if SAP:
        tl.store(acc_out_ptr + rh * N + j, acc + p, mask=jm)
    if SALIENCY:
        img = (j >= image_start) & (j < image_start + n_image)
        tl.store(img_ptr + rh, tl.sum(tl.where(img, p, 0.0), axis=0))
