"""VATS and SAP inside the main branch's attention, on the harness's attention controller (§6.5).

One `VASparseLayer` handler per decoder layer that has a role (VATS, SAP, or the saliency layer),
all sharing one `VASparseState` that holds the per-row tensors (saliency history `r`, SAP
accumulators `c` per layer) and is expanded/reordered with the beams by the controller.

Decode step, layer ℓ, explicit path (methods.md §6.5):
  1. s = scale·Q·Kᵀ (fp32 copy, before the mask)
  2. VATS: δ on raw s and P → dropped set D; DPC-kNN merge of D into virtual keys K̄, V̄, ω; s̄
  3. SAP: c grows by a zero entry; w = softmax(c); s ← s·(1+β−βw), s̄ ← s̄·(1+β−βw̄), w̄ = Σ ω_i w_i
  4. s[D] = −inf (finfo.min); virtual keys appended unmasked
  5. softmax, output (done by the attention layer)
  6. â = redistribution of the virtual probabilities to D; c += â; saliency layer appends r
The real KV cache is only read: virtual keys live for one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from methods.vasparse_cluster import Merge, cluster_count, dpc_knn, merge_clusters, redistribute
from methods.vasparse_sap import grow, penalise, prefill_accumulator, sink_weights
from methods.vasparse_select import candidate_positions, n_kept, saliency_probs, select_dropped, vats_scores
from vh_bench.decoding.attention import AttentionHandler, AttnCall

DROPPED = torch.finfo(torch.float32).min  # the attention layer's recommended "−inf" for a dropped key


@dataclass(frozen=True)
class Layout:
    """What the handlers need to know about the prompt (host values)."""

    prompt_len: int
    image_start: int
    n_image: int


@dataclass(frozen=True)
class VATSParams:
    lam: float
    sparsity: float
    scope: str
    normalize: str
    merge: str
    cluster_ratio: float
    knn_k: int


class VASparseState:
    """Per-row state shared by the layers of one generation; dim 0 is rows (beams)."""

    def __init__(self, layout: Layout, *, trace: bool = False, record: bool = False) -> None:
        self.layout = layout
        self.r: torch.Tensor | None = None  # (R, N) saliency history
        self.c: dict[int, torch.Tensor] = {}  # layer → (R, H, N) SAP accumulators
        self._p: tuple[int, torch.Tensor] | None = None  # P of the current step, by key count
        self._candidates: dict[tuple[str, int, str], torch.Tensor] = {}
        # diagnostics
        self.trace = trace  # keep each layer's last â row and dropped set (tests)
        self.rows: dict[int, torch.Tensor] = {}
        self.dropped: dict[int, torch.Tensor | None] = {}
        self.record = record
        self.keep_fraction: list[float] = []
        self.sink_sum: torch.Tensor | None = None
        self.sink_calls = 0

    # beams
    def expand(self, n: int) -> None:
        if self.r is not None:
            self.r = self.r.repeat_interleave(n, dim=0)
        self.c = {k: v.repeat_interleave(n, dim=0) for k, v in self.c.items()}
        self._p = None

    def reorder(self, beam_idx: torch.Tensor) -> None:
        if self.r is not None:
            self.r = self.r.index_select(0, beam_idx.to(self.r.device))
        self.c = {k: v.index_select(0, beam_idx.to(v.device)) for k, v in self.c.items()}
        self._p = None

    # shared per-step quantities
    def saliency(self, n_keys: int) -> torch.Tensor:
        """P over j < N−1, computed once per step (methods.md §6.1)."""
        if self._p is None or self._p[0] != n_keys:
            if self.r is None or self.r.shape[1] < n_keys - 1:
                raise RuntimeError("VATS needs the saliency history of every processed token")
            self._p = (n_keys, saliency_probs(self.r, n_keys))
        return self._p[1]

    def candidates(self, scope: str, n_keys: int, device: torch.device) -> torch.Tensor:
        """Candidate key positions for this step (host-known), cached per step and device."""
        key = (scope, n_keys, str(device))
        if key not in self._candidates:
            if any(k[1] != n_keys for k in self._candidates):
                self._candidates = {}  # a new step: earlier key counts are never asked again
            lay = self.layout
            pos = candidate_positions(scope, n_keys, lay.prompt_len, lay.image_start, lay.n_image)
            self._candidates[key] = pos.to(device)
        return self._candidates[key]

    def extras(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.keep_fraction:
            out["vats_keep_fraction"] = sum(self.keep_fraction) / len(self.keep_fraction)
        if self.sink_calls:
            out["sap_sink_weight"] = float(self.sink_sum) / self.sink_calls
        return out


class VASparseLayer(AttentionHandler):
    """The VASparse roles of one decoder layer: VATS (`vats`), SAP (`beta`), saliency recording."""

    modes = frozenset({"prefill", "decode"})

    def __init__(
        self,
        state: VASparseState,
        *,
        vats: VATSParams | None,
        sap_beta: float | None,
        saliency: bool,
    ) -> None:
        self.state = state
        self.vats = vats
        self.sap_beta = sap_beta
        self.saliency = saliency
        self._pending: tuple[torch.Tensor | None, Merge | None] = (None, None)

    # -- which path ----------------------------------------------------------------------------
    def _n_drop(self, n_keys: int) -> int:
        if self.vats is None:
            return 0
        n = self.state.candidates(self.vats.scope, n_keys, torch.device("cpu")).numel()
        return n - n_kept(n, self.vats.sparsity)

    def explicit(self, call: AttnCall) -> bool:
        if call.mode == "prefill":
            return self.sap_beta is not None or self.saliency  # only to initialise c and r
        n_drop = self._n_drop(call.kv_len)
        if self.state.record and self.vats is not None:
            self.state.keep_fraction.append(1.0 - n_drop / call.kv_len)  # per VATS call, drops or not
        # A VATS-only layer with nothing to drop this step has nothing to do: plain path.
        return self.sap_beta is not None or self.saliency or n_drop > 0

    # -- steps 1–4 ------------------------------------------------------------------------------
    def scores(self, call: AttnCall, s: torch.Tensor) -> torch.Tensor | None:
        self._pending = (None, None)
        if call.mode != "decode":
            return None
        if call.q_len != 1:
            raise RuntimeError("VASparse decode steps feed one token per row")
        n_keys = call.kv_len
        dropped, merge, s_bar = None, None, None
        if self.vats is not None and self._n_drop(n_keys) > 0:
            dropped, merge, s_bar = self._select(call, s, n_keys)
        if self.sap_beta is not None:
            c = grow(self.state.c[call.layer], n_keys)
            self.state.c[call.layer] = c
            w = sink_weights(c)  # (R, H, N)
            s = penalise(s, w[:, :, None, :], self.sap_beta)
            if merge is not None:
                w_bar = (merge.members(s_bar.shape[-1]) @ torch.gather(w, -1, dropped)[..., None])[..., 0]
                s_bar = penalise(s_bar, w_bar[:, :, None, :], self.sap_beta)
            if self.state.record:
                sink = w.max(dim=-1).values.mean()
                self.state.sink_sum = sink if self.state.sink_sum is None else self.state.sink_sum + sink
                self.state.sink_calls += 1
        if dropped is not None:
            s = s.scatter(-1, dropped[:, :, None, :], DROPPED)
            if merge is not None:
                call.add_keys(s_bar, merge.values.to(call.value.dtype))
        self._pending = (dropped, merge)
        return s

    def _select(self, call: AttnCall, s: torch.Tensor, n_keys: int):
        p = self.vats
        cand = self.state.candidates(p.scope, n_keys, s.device)
        n = cand.numel()
        keep = n_kept(n, p.sparsity)
        s_cand = s[:, :, 0, :].index_select(-1, cand)  # raw scores, before SAP (Decision §6.1)
        if p.lam != 0:
            p_cand = self.state.saliency(n_keys).index_select(-1, cand)
        else:  # "w/o P": the saliency term is 0 and its history is not recorded
            p_cand = s_cand.new_zeros(s_cand.shape[0], n)
        delta = vats_scores(s_cand, p_cand, p.lam, p.normalize)
        d_idx = select_dropped(delta, keep)  # (R, H, m) into the candidates
        dropped = cand[d_idx]  # key positions
        if p.merge != "dpc_knn":
            return dropped, None, None
        m = d_idx.shape[-1]
        gather_idx = dropped[..., None].expand(-1, -1, -1, call.key.shape[-1])
        k_drop = torch.gather(call.key, 2, gather_idx).float()
        v_drop = torch.gather(call.value, 2, gather_idx).float()
        c = cluster_count(m, p.cluster_ratio)
        assign, _ = dpc_knn(k_drop, c, p.knn_k)
        merge = merge_clusters(k_drop, v_drop, torch.gather(delta, -1, d_idx), assign, c)
        s_bar = torch.matmul(call.query.float(), merge.keys.transpose(-1, -2)) * call.scaling  # (R, H, 1, c)
        return dropped, merge, s_bar

    # -- step 6 ---------------------------------------------------------------------------------
    def probs(self, call: AttnCall, p: torch.Tensor) -> None:
        st = self.state
        lay = st.layout
        img = slice(lay.image_start, lay.image_start + lay.n_image)
        if call.mode == "prefill":
            if self.sap_beta is not None:
                st.c[call.layer] = prefill_accumulator(p)
            if self.saliency:
                st.r = p[..., img].sum(dim=-1).mean(dim=1)  # (R, L): mean_h Σ_{k∈I} a_{j,k}
            return
        n_keys = call.kv_len
        dropped, merge = self._pending
        self._pending = (None, None)
        real = p[:, :, 0, :n_keys]
        a_hat = redistribute(real, dropped, merge, p[:, :, 0, n_keys:] if merge is not None else None)
        if st.trace:
            st.rows[call.layer], st.dropped[call.layer] = a_hat, dropped
        if self.sap_beta is not None:
            st.c[call.layer] = st.c[call.layer] + a_hat
        if self.saliency:
            r_new = a_hat[..., img].sum(dim=-1).mean(dim=1)  # (R,)
            st.r = torch.cat([st.r, r_new[:, None]], dim=1)
