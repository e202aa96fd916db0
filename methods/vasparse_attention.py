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

With `kernel` set (the fused CPU kernel of `methods.vasparse_fused` or the Triton kernel of
`methods.vasparse_triton`), a decode step's steps 1–6 run in one kernel call per layer (`attend`)
instead; the prefill and the `text` scope stay on this path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from methods.vasparse_cluster import Merge, cluster_count, dpc_knn, merge_clusters, merge_one_cluster, redistribute
from methods.vasparse_sap import grow, penalise, prefill_accumulator, sink_weights
from methods.vasparse_select import (
    candidate_positions,
    n_kept,
    saliency_probs,
    saliency_term,
    select_dropped,
    vats_delta,
)
from vh_bench.decoding.attention import AttentionHandler, AttnCall
from vh_bench.decoding.launches import CustomKernel

DROPPED = torch.finfo(torch.float32).min  # the attention layer's recommended "−inf" for a dropped key
_CPU_LAUNCH = CustomKernel("vasparse_cpu")


class _NoLaunch:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


_NO_LAUNCH = _NoLaunch()


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


@dataclass(frozen=True)
class StepPlan:
    """VATS counts of one decode step (they depend only on N and the prompt layout)."""

    cand: torch.Tensor  # candidate key positions, ascending (CPU)
    start: int | None  # first candidate when they are contiguous (every scope but `text`), else None
    n: int  # candidates
    n_keep: int
    n_drop: int  # m = |D|, equal for every row and head
    n_clusters: int  # c (0 when nothing is dropped)


@dataclass(frozen=True)
class KernelArgs:
    """VATS arguments of one decode step for the fused kernel."""

    start: int  # first candidate (contiguous candidates)
    n: int  # candidates
    n_drop: int  # m
    n_clusters: int  # c
    term: torch.Tensor | None  # λ·B of δ, (R, n) contiguous; None for λ = 0 or nothing dropped


NO_VATS = KernelArgs(0, 0, 0, 0, None)


class VASparseState:
    """Per-row state shared by the layers of one generation; dim 0 is rows (beams)."""

    def __init__(self, layout: Layout, *, trace: bool = False, record: bool = False) -> None:
        self.layout = layout
        self.r: torch.Tensor | None = None  # (R, N) saliency history
        self.c: dict[int, torch.Tensor] = {}  # layer → (R, H, N) SAP accumulators
        self._p: tuple[int, torch.Tensor] | None = None  # P of the current step, by key count
        self._candidates: dict[str, torch.Tensor] = {}  # this step's candidates, by device
        # Host-known facts of the current step, shared by the layers (cleared when N changes):
        # plans by (params, N) and the saliency term λ·B of δ by (params, N, device).
        self._step_keys = -1
        self._plans: dict[tuple[VATSParams, int], StepPlan] = {}
        self._terms: dict[tuple[VATSParams, int, str], torch.Tensor | None] = {}
        # The last plan and kernel arguments, found by identity: every layer of a step asks for the
        # same `params` object, and hashing the dataclass on each call costs more than the lookup.
        self._last_plan: tuple[VATSParams, int, StepPlan] | None = None
        self._kernel_args: tuple[VATSParams, int, KernelArgs | None] | None = None
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
        self._terms = {}
        self._kernel_args = None  # holds a term computed from the old rows

    def reorder(self, beam_idx: torch.Tensor) -> None:
        if self.r is not None:
            self.r = self.r.index_select(0, beam_idx.to(self.r.device))
        self.c = {k: v.index_select(0, beam_idx.to(v.device)) for k, v in self.c.items()}
        self._p = None
        self._terms = {}
        self._kernel_args = None

    # shared per-step quantities
    def saliency(self, n_keys: int) -> torch.Tensor:
        """P over j < N−1, computed once per step (methods.md §6.1)."""
        if self._p is None or self._p[0] != n_keys:
            if self.r is None or self.r.shape[1] < n_keys - 1:
                raise RuntimeError("VATS needs the saliency history of every processed token")
            self._p = (n_keys, saliency_probs(self.r, n_keys))
        return self._p[1]

    def candidates(self, plan: StepPlan, device: torch.device) -> torch.Tensor:
        """This step's candidate positions (`plan.cand`) on `device`, moved once per step."""
        key = str(device)
        if key not in self._candidates:
            self._candidates[key] = plan.cand.to(device)
        return self._candidates[key]

    def _new_step(self, n_keys: int) -> None:
        if n_keys != self._step_keys:
            self._step_keys = n_keys
            self._plans = {}
            self._terms = {}
            self._candidates = {}

    def plan(self, params: VATSParams, n_keys: int) -> StepPlan:
        """Candidates and counts of this step for `params` (host values, once per step)."""
        last = self._last_plan
        if last is not None and last[0] is params and last[1] == n_keys:
            return last[2]
        self._new_step(n_keys)
        key = (params, n_keys)
        plan = self._plans.get(key)
        if plan is None:
            lay = self.layout
            cand = candidate_positions(params.scope, n_keys, lay.prompt_len, lay.image_start, lay.n_image)
            n = cand.numel()
            m = n - n_kept(n, params.sparsity)
            contiguous = n > 0 and int(cand[-1]) - int(cand[0]) == n - 1
            plan = StepPlan(
                cand=cand,
                start=int(cand[0]) if contiguous else None,
                n=n,
                n_keep=n - m,
                n_drop=m,
                n_clusters=cluster_count(m, params.cluster_ratio) if m > 0 else 0,
            )
            self._plans[key] = plan
        self._last_plan = (params, n_keys, plan)
        return plan

    def kernel_args(self, params: VATSParams, n_keys: int, device: torch.device) -> KernelArgs | None:
        """The VATS arguments of the fused kernel for this step, shared by its layers; None when the
        candidates are scattered (`text` scope), which the kernel does not take."""
        last = self._kernel_args
        if last is not None and last[0] is params and last[1] == n_keys:
            return last[2]
        plan = self.plan(params, n_keys)
        m = plan.n_drop
        args: KernelArgs | None
        if m == 0:
            args = KernelArgs(0, plan.n, 0, 0, None)
        elif plan.start is None:
            args = None
        else:
            term = self.saliency_term(params, plan, n_keys, device)
            args = KernelArgs(plan.start, plan.n, m, plan.n_clusters, None if term is None else term[:, 0, :])
        self._kernel_args = (params, n_keys, args)
        return args

    def saliency_term(self, params: VATSParams, plan: StepPlan, n_keys: int, device: torch.device) -> torch.Tensor | None:
        """λ·B of δ at the candidates, `(R, 1, n)`, shared by every VATS layer and head of this step.

        None when λ = 0 ("w/o P": the term is 0 and the history is not recorded).
        """
        self._new_step(n_keys)
        key = (params, n_keys, str(device))
        if key not in self._terms:
            term = None
            if params.lam != 0:
                p = self.saliency(n_keys)
                p = p.narrow(-1, plan.start, plan.n) if plan.start is not None else p.index_select(-1, self.candidates(plan, p.device))
                term = saliency_term(p, params.lam, params.normalize)[:, None, :]
            self._terms[key] = term
        return self._terms[key]

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
        kernel: Any | None = None,
    ) -> None:
        self.state = state
        self.vats = vats
        self.sap_beta = sap_beta
        self.saliency = saliency
        self.kernel = kernel  # the fused CPU kernel module, the Triton one, or None for the reference path
        self._grows = bool(getattr(kernel, "grows_accumulator", False))
        # The Triton wrapper counts its own launch; the C++ kernel's call is counted here.
        self._launch = _NO_LAUNCH if self._grows else _CPU_LAUNCH
        lay = state.layout
        self._kernel_static = (  # the kernel's per-layer constants
            vats.knn_k if vats is not None else 1,
            vats is not None and vats.normalize == "sum",
            vats is not None and vats.merge == "dpc_knn",
            sap_beta if sap_beta is not None else 0.0,
            lay.image_start if saliency else 0,
            lay.n_image if saliency else 0,
        )
        self._pending: tuple[torch.Tensor | None, Merge | None] = (None, None)

    # -- which path ----------------------------------------------------------------------------
    def _n_drop(self, n_keys: int) -> int:
        if self.vats is None:
            return 0
        return self.state.plan(self.vats, n_keys).n_drop

    def explicit(self, call: AttnCall) -> bool:
        if call.mode == "prefill":
            return self.sap_beta is not None or self.saliency  # only to initialise c and r
        n_drop = self._n_drop(call.kv_len)
        if self.state.record and self.vats is not None:
            self.state.keep_fraction.append(1.0 - n_drop / call.kv_len)  # per VATS call, drops or not
        # A VATS-only layer with nothing to drop this step has nothing to do: plain path.
        return self.sap_beta is not None or self.saliency or n_drop > 0

    # -- steps 1–6 fused ---------------------------------------------------------------------------
    def attend(self, call: AttnCall, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        if self.kernel is None or call.mode != "decode" or attention_mask is not None or call.q_len != 1:
            return None
        st = self.state
        n_keys = call.kv_len
        args = NO_VATS if self.vats is None else st.kernel_args(self.vats, n_keys, call.query.device)
        if args is None:  # scattered candidates (`text` scope): reference path
            return None
        acc = None
        grows = self._grows
        if self.sap_beta is not None:
            if grows:  # the Triton kernel reads missing entries as 0 and returns c + â
                acc = st.c[call.layer].contiguous()
            else:
                acc = grow(st.c[call.layer], n_keys).contiguous()
                st.c[call.layer] = acc  # updated in place by the kernel: c += â
        knn_k, normalize_sum, merge, beta, image_start, n_image = self._kernel_static
        with self._launch:
            res = self.kernel.decode(
                call.query, call.key_states, call.value_states, call.scaling, acc, beta, args.term,
                args.start, args.n, args.n_drop, args.n_clusters, knn_k, normalize_sum, merge,
                image_start, n_image, st.trace, st.record and acc is not None,
            )  # fmt: skip
        out, r_new, a_hat, dropped, w_max = res[:5]
        if grows and acc is not None:
            st.c[call.layer] = res[5]
        if st.trace:
            st.rows[call.layer], st.dropped[call.layer] = a_hat, (dropped if args.n_drop > 0 else None)
        if st.record and acc is not None:
            sink = w_max.mean()
            st.sink_sum = sink if st.sink_sum is None else st.sink_sum + sink
            st.sink_calls += 1
        if self.saliency:
            st.r = torch.cat([st.r, r_new[:, None]], dim=1)
        return out

    # -- steps 1–4 ------------------------------------------------------------------------------
    def scores(self, call: AttnCall, s: torch.Tensor) -> torch.Tensor | None:
        self._pending = (None, None)
        if call.mode != "decode":
            return None
        if call.q_len != 1:
            raise RuntimeError("VASparse decode steps feed one token per row")
        n_keys = call.kv_len
        dropped, merge, s_bar = None, None, None
        if self.vats is not None:
            plan = self.state.plan(self.vats, n_keys)
            if plan.n_drop > 0:
                dropped, merge, s_bar = self._select(call, s, n_keys, plan)
        if self.sap_beta is not None:
            c = grow(self.state.c[call.layer], n_keys)
            self.state.c[call.layer] = c
            w = sink_weights(c)  # (R, H, N)
            s = penalise(s, w[:, :, None, :], self.sap_beta)
            if merge is not None:
                w_drop = torch.gather(w, -1, dropped)[..., None]  # (R, H, m, 1)
                w_bar = (merge.members @ w_drop)[..., 0]  # w̄ = Σ_{i∈cluster} ω_i w_i
                s_bar = penalise(s_bar, w_bar[:, :, None, :], self.sap_beta)
            if self.state.record:
                sink = w.max(dim=-1).values.mean()
                self.state.sink_sum = sink if self.state.sink_sum is None else self.state.sink_sum + sink
                self.state.sink_calls += 1
        if dropped is not None:
            # `s` is this layer's own fp32 score tensor (a copy, or the penalised result): edit in place.
            s = s.scatter_(-1, dropped[:, :, None, :], DROPPED)
            if merge is not None:
                call.add_keys(s_bar, merge.values.to(call.value.dtype))
        self._pending = (dropped, merge)
        return s

    def _select(self, call: AttnCall, s: torch.Tensor, n_keys: int, plan: StepPlan):
        p = self.vats
        st = self.state
        row = s[:, :, 0, :]
        if plan.start is not None:  # contiguous candidates: a view, no index
            s_cand = row.narrow(-1, plan.start, plan.n)  # raw scores, before SAP (Decision §6.1)
        else:
            cand = st.candidates(plan, s.device)
            s_cand = row.index_select(-1, cand)
        delta = vats_delta(s_cand, st.saliency_term(p, plan, n_keys, s.device), p.normalize)
        d_idx = select_dropped(delta, plan.n_keep)  # (R, H, m) into the candidates
        if plan.start is not None:
            dropped = d_idx + plan.start  # key positions
        else:
            dropped = cand[d_idx]
        if p.merge != "dpc_knn":
            return dropped, None, None
        m, c = plan.n_drop, plan.n_clusters
        key, value = call.key, call.value
        gather_idx = dropped[..., None].expand(-1, -1, -1, key.shape[-1])
        k_drop = torch.gather(key, 2, gather_idx).float()
        v_drop = torch.gather(value, 2, gather_idx).float()
        d_drop = torch.gather(delta, -1, d_idx)
        if c == 1:  # a single cluster: DPC-kNN has nothing to decide
            merge = merge_one_cluster(k_drop, v_drop, d_drop)
        else:
            if c == m:  # singletons: every point is a centre and its own cluster
                assign = torch.arange(m, device=s.device).expand(d_idx.shape)
            else:
                assign, _ = dpc_knn(k_drop, c, p.knn_k)
            merge = merge_clusters(k_drop, v_drop, d_drop, assign, c)
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
            st.c[call.layer].add_(a_hat)  # grown (a fresh tensor) in `scores` this step
        if self.saliency:
            r_new = a_hat[..., img].sum(dim=-1).mean(dim=1)  # (R,)
            st.r = torch.cat([st.r, r_new[:, None]], dim=1)
