"""The attention-control layer (methods.md §1.6): the one place that knows transformers' attention internals.

One attention function, `vh_attn`, is registered at import in transformers' `AttentionInterface`
*and* `AttentionMaskInterface` (with `sdpa_mask`). Without the mask registration `create_causal_mask`
exits early and every layer gets `attention_mask=None`, so an explicit-score implementation would
silently lose the causal mask; `register()` always does both.

Inside `vh_attn` a layer takes one of two paths:

* plain: transformers' sdpa function (bit-identical to `attn_implementation="sdpa"`), or, when the
  model's backend is `eager`, the explicit path with no modification (bit-identical to `"eager"`);
* explicit: eager's operation order, with a method's `AttentionHandler` reading and modifying an
  fp32 copy of the pre-mask scores, appending virtual keys and reading the probabilities.

A method drives it with an `AttentionController` (per-layer handlers, a mode, optional physical
sequence pruning) installed for the duration of one generation by `control(adapter, controller)`,
which always restores the model, exception or not. State never travels through forward kwargs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

if TYPE_CHECKING:
    from vh_bench.models.llava import LlavaAdapter

ATTN_NAME = "vh_attn"
BACKENDS = ("sdpa", "eager")
MODES = ("prefill", "decode", "branch")
_STATE_ATTR = "vh_attn_state"


# ---- registration ------------------------------------------------------------------------------
def register() -> None:
    """Register `vh_attn` in both registries (idempotent). Never register one without the other."""
    AttentionInterface.register(ATTN_NAME, vh_attn)
    AttentionMaskInterface.register(ATTN_NAME, sdpa_mask)


def is_registered() -> bool:
    return (
        AttentionInterface._global_mapping.get(ATTN_NAME) is vh_attn
        and AttentionMaskInterface._global_mapping.get(ATTN_NAME) is sdpa_mask
    )


# ---- per-model state ---------------------------------------------------------------------------
class AttentionState:
    """Shared by every text attention module of one model: the plain-path kernel and the controller."""

    __slots__ = ("backend", "controller")

    def __init__(self, backend: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")
        self.backend = backend
        self.controller: AttentionController | None = None


def attach(attention_modules: Iterable[torch.nn.Module], backend: str | None = None) -> AttentionState:
    """Give the language model's attention modules one shared state (called by the adapter at load).

    A second adapter over the same model object shares the existing state (`backend` None or equal).
    `backend` None on a fresh model means sdpa.
    """
    modules = list(attention_modules)
    states = [state_of(m) for m in modules]
    if any(st is not None for st in states):
        state = states[0]
        if state is None or any(st is not state for st in states) or backend not in (None, state.backend):
            raise RuntimeError(f"this model is already attached to {ATTN_NAME} with another backend")
        return state
    state = AttentionState(backend or "sdpa")
    for m in modules:
        if not hasattr(m, "layer_idx"):
            raise TypeError(f"{type(m).__name__} has no layer_idx; only decoder attention can use {ATTN_NAME}")
        setattr(m, _STATE_ATTR, state)
    return state


def state_of(module: torch.nn.Module) -> AttentionState | None:
    return module.__dict__.get(_STATE_ATTR)


# ---- one attention call, as a handler sees it --------------------------------------------------
class AttnCall:
    """What a handler may read during one layer's attention call.

    `query` is `(rows, H, q_len, d)` after RoPE; `key`/`value` are the layer's full cached K/V after
    this step's update, repeated to `H` heads on first access (GQA). `scaling` is `d^-1/2`.
    """

    __slots__ = (
        "module", "layer", "mode", "query", "key_states", "value_states", "scaling",
        "_key", "_value", "extra_scores", "extra_values",
    )  # fmt: skip

    def __init__(self, module, layer, mode, query, key_states, value_states, scaling) -> None:
        self.module = module
        self.layer: int = layer
        self.mode: str = mode
        self.query: torch.Tensor = query
        self.key_states: torch.Tensor = key_states  # (rows, H_kv, kv_len, d), as cached
        self.value_states: torch.Tensor = value_states
        self.scaling: float = scaling
        self._key: torch.Tensor | None = None
        self._value: torch.Tensor | None = None
        self.extra_scores: torch.Tensor | None = None
        self.extra_values: torch.Tensor | None = None

    @property
    def q_len(self) -> int:
        return self.query.shape[2]

    @property
    def kv_len(self) -> int:
        return self.key_states.shape[2]

    @property
    def key(self) -> torch.Tensor:
        if self._key is None:
            self._key = repeat_kv(self.key_states, self.module.num_key_value_groups)
        return self._key

    @property
    def value(self) -> torch.Tensor:
        if self._value is None:
            self._value = repeat_kv(self.value_states, self.module.num_key_value_groups)
        return self._value

    def raw_scores(self) -> torch.Tensor:
        """`scaling · Q·Kᵀ` in the model dtype, eager's op order: `(rows, H, q_len, kv_len)`."""
        return torch.matmul(self.query, self.key.transpose(2, 3)) * self.scaling

    def add_keys(self, scores: torch.Tensor, values: torch.Tensor) -> None:
        """Append virtual keys for this call only (explicit path; e.g. VASparse's merged clusters).

        `scores` is `(rows, H, q_len, c)` fp32, already scaled (and recalibrated, if the method does);
        `values` is `(rows, H, c, d)`. They join the softmax after the causal mask, unmasked, and the
        probabilities a handler reads carry them as the last `c` columns.
        """
        if self.extra_scores is None:
            self.extra_scores, self.extra_values = scores, values
        else:
            self.extra_scores = torch.cat([self.extra_scores, scores], dim=-1)
            self.extra_values = torch.cat([self.extra_values, values], dim=2)


# ---- handlers ----------------------------------------------------------------------------------
class AttentionHandler:
    """Per-layer behaviour installed on an `AttentionController`. Override what you need.

    Per call, in this order:
      1. `observe(call)`: read Q/K/V before the output is computed (both paths).
      2. `explicit(call)`: True → `attend`, else the explicit path with 3–4; False → the plain path
         (sdpa, or eager).
      2b. `attend(call, attention_mask)`: the whole output `(rows, q_len, H, d)` from the handler's
         own (fused) implementation of 3–4, or None (default) for the explicit path.
      3. `scores(call, s)`: `s` is an fp32 copy of `scaling·Q·Kᵀ` before the mask, `(rows, H, q, kv)`.
         Return the modified scores (in-place edits allowed) or None for "unchanged". May call
         `call.add_keys(...)`. A dropped key is best set to `torch.finfo(torch.float32).min`.
      4. `probs(call, p)`: the fp32 softmax output `(rows, H, q, kv [+ virtual])`, as produced.
    `modes` lists the controller modes in which the handler is active; in other modes the layer
    takes the plain path. Per-row state is kept aligned with beams by `expand`/`reorder`, which the
    controller calls once per distinct handler.
    """

    modes: frozenset[str] = frozenset({"prefill", "decode"})

    def observe(self, call: AttnCall) -> None:
        pass

    def explicit(self, call: AttnCall) -> bool:
        return True

    def attend(self, call: AttnCall, attention_mask: torch.Tensor | None) -> torch.Tensor | None:
        return None

    def scores(self, call: AttnCall, s: torch.Tensor) -> torch.Tensor | None:
        return None

    def probs(self, call: AttnCall, p: torch.Tensor) -> None:
        pass

    def expand(self, n: int) -> None:
        pass

    def reorder(self, beam_idx: torch.Tensor) -> None:
        pass

    @property
    def edits_scores(self) -> bool:
        return type(self).scores is not AttentionHandler.scores


class HandlerChain(AttentionHandler):
    """Several handlers on one layer, applied in installation order."""

    def __init__(self, handlers: list[AttentionHandler]) -> None:
        self.handlers = handlers

    @property
    def modes(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset().union(*(h.modes for h in self.handlers))

    def _live(self, call: AttnCall) -> list[AttentionHandler]:
        return [h for h in self.handlers if call.mode in h.modes]

    def observe(self, call: AttnCall) -> None:
        for h in self._live(call):
            h.observe(call)

    def explicit(self, call: AttnCall) -> bool:
        # Every handler is asked (no short-circuit): `explicit` may record per-call facts.
        return any([h.explicit(call) for h in self._live(call)])

    def scores(self, call: AttnCall, s: torch.Tensor) -> torch.Tensor | None:
        changed = False
        for h in self._live(call):
            if h.edits_scores:
                out = h.scores(call, s)
                if out is not None:
                    s, changed = out, True
        return s if changed else None

    def probs(self, call: AttnCall, p: torch.Tensor) -> None:
        for h in self._live(call):
            h.probs(call, p)

    @property
    def edits_scores(self) -> bool:
        return any(h.edits_scores for h in self.handlers)


class RowTensors:
    """Named per-row tensors (dim 0 = rows) kept aligned with the beams: SAP accumulators, histories."""

    def __init__(self, **tensors: torch.Tensor) -> None:
        self.tensors: dict[str, torch.Tensor] = dict(tensors)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def __setitem__(self, name: str, value: torch.Tensor) -> None:
        self.tensors[name] = value

    def __contains__(self, name: str) -> bool:
        return name in self.tensors

    def expand(self, n: int) -> None:
        self.tensors = {k: v.repeat_interleave(n, dim=0) for k, v in self.tensors.items()}

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.tensors = {k: v.index_select(0, beam_idx.to(v.device)) for k, v in self.tensors.items()}


class SequencePrune:
    """Physical removal of sequence positions from decoder layer `start` on (methods.md §4.3).

    Set `keep` (sorted 1-D long tensor of positions to keep) before layer `start` runs; it may be set
    by a handler of an earlier layer in the same forward. While the controller is in one of `modes`,
    forward pre-hooks slice `hidden_states` (at `start`), the rotary `(cos, sin)` and `position_ids`
    (every layer ≥ start, so kept tokens keep their original RoPE positions) and a non-None 4D mask.
    With `start ≥ 1`, layer 0 keeps the full length, so decode positions continue the original
    numbering without help; `start = 0` would need explicit `position_ids` when decoding.
    """

    def __init__(self, start: int, modes: Iterable[str] = ("prefill",)) -> None:
        self.start = start
        self.modes = frozenset(modes)
        self.keep: torch.Tensor | None = None


# ---- the controller ----------------------------------------------------------------------------
class AttentionController:
    """Per-generation control of the language model's attention: handlers per layer, a mode, pruning.

    The method sets `mode` before each forward (`prefill`, `decode` or `branch`). Layers without an
    active handler take the plain path. Layer indices may be negative (counted from the end).
    """

    def __init__(self, n_layers: int) -> None:
        self.n_layers = n_layers
        self._handlers: dict[int, AttentionHandler] = {}
        self._row_states: list[Any] = []
        self.prunes: list[SequencePrune] = []
        self.active: dict[int, AttentionHandler] = {}
        self._mode = "prefill"
        self._refresh()

    # layers
    def layer_index(self, layer: int) -> int:
        idx = layer + self.n_layers if layer < 0 else layer
        if not 0 <= idx < self.n_layers:
            raise IndexError(f"layer {layer} out of range for {self.n_layers} decoder layers")
        return idx

    def add_handler(self, layers: int | Iterable[int], handler: AttentionHandler) -> AttentionHandler:
        for layer in [layers] if isinstance(layers, int) else layers:
            idx = self.layer_index(layer)
            old = self._handlers.get(idx)
            if old is None:
                self._handlers[idx] = handler
            elif isinstance(old, HandlerChain):
                old.handlers.append(handler)
            else:
                self._handlers[idx] = HandlerChain([old, handler])
        self._refresh()
        return handler

    def handler(self, layer: int) -> AttentionHandler | None:
        return self._handlers.get(self.layer_index(layer))

    def prune_sequence(self, start: int, modes: Iterable[str] = ("prefill",)) -> SequencePrune:
        spec = SequencePrune(self.layer_index(start), modes)
        self.prunes.append(spec)
        return spec

    def add_row_state(self, state: Any) -> Any:
        """Anything with `expand(n)` and `reorder(beam_idx)` that is not a handler (e.g. `RowTensors`)."""
        self._row_states.append(state)
        return state

    # mode
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"controller mode {mode!r} is not one of {MODES}")
        if mode != self._mode:  # set on every step; only a change re-resolves the handlers
            self._mode = mode
            self._refresh()

    def _refresh(self) -> None:
        # Resolved once per mode change so the per-call cost is one dict lookup.
        self.active = {i: h for i, h in self._handlers.items() if self._mode in h.modes}

    # beams
    def _stateful(self) -> list[Any]:
        seen: dict[int, Any] = {}
        for h in self._handlers.values():
            for x in h.handlers if isinstance(h, HandlerChain) else [h]:
                seen.setdefault(id(x), x)
        for s in self._row_states:
            seen.setdefault(id(s), s)
        return list(seen.values())

    def expand(self, n: int) -> None:
        if n > 1:
            for s in self._stateful():
                s.expand(n)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        for s in self._stateful():
            s.reorder(beam_idx)


# ---- installation ------------------------------------------------------------------------------
@contextmanager
def control(adapter: "LlavaAdapter", controller: AttentionController | None) -> Iterator[AttentionController | None]:
    """Install `controller` (None = plain everywhere) and its pruning hooks; always restore.

    The previous controller is put back and every hook removed on exit, exception or not, so a
    failing generation never leaves the model modified.
    """
    state: AttentionState | None = getattr(adapter, "attention_state", None)
    if state is None:
        if controller is not None:
            raise RuntimeError(
                f"this model was loaded without {ATTN_NAME}; attention control needs "
                "LlavaAdapter.load(..., stock_attention=False)"
            )
        yield None
        return
    previous = state.controller
    handles: list[Any] = []
    try:
        if controller is not None and controller is not previous:  # re-entering must not hook twice
            for spec in controller.prunes:
                for idx in range(spec.start, controller.n_layers):
                    handles.append(adapter.register_layer_pre_hook(idx, _prune_hook(controller, spec, idx)))
        state.controller = controller
        yield controller
    finally:
        state.controller = previous
        for h in handles:
            h.remove()


class ControlledStepper:
    """A stepper (e.g. a `Branch`) run under a controller: `prefill` mode for the prompt, `decode` after.

    Exposes `controller`, which `Method.generate` installs around the decode loop, and keeps the
    controller's per-row state aligned with the stepper's caches under beam search.
    """

    def __init__(self, inner: Any, controller: AttentionController) -> None:
        self.inner = inner
        self.controller = controller

    def prefill(self) -> torch.Tensor:
        self.controller.mode = "prefill"
        try:
            return self.inner.prefill()
        finally:
            self.controller.mode = "decode"

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        self.controller.mode = "decode"
        return self.inner.step(tokens)

    def expand(self, n: int) -> None:
        self.inner.expand(n)
        self.controller.expand(n)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.inner.reorder(beam_idx)
        self.controller.reorder(beam_idx)


def _prune_hook(controller: AttentionController, spec: SequencePrune, layer_idx: int) -> Callable:
    # Decoder-layer call in transformers 5: layer(hidden_states, attention_mask=..., position_ids=...,
    # cache=... (past_key_values=... before 5.24), use_cache=..., position_embeddings=(cos, sin), **kwargs).
    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        keep = spec.keep
        if keep is None or controller.mode not in spec.modes:
            return None
        if layer_idx == spec.start:
            if args:
                args = (args[0].index_select(1, keep), *args[1:])
            else:
                kwargs["hidden_states"] = kwargs["hidden_states"].index_select(1, keep)
        # The sequence is the second-last dim of cos/sin and the last of position_ids, whatever comes
        # before: (rows, L, d) and (rows, L) for Llama; Qwen2.5-VL's layers get (rows, L, d) with the
        # three M-RoPE sections already interleaved, and position_ids None (its 3-D ones are (3, rows, L)).
        pe = kwargs.get("position_embeddings")
        if pe is not None:
            kwargs["position_embeddings"] = tuple(t.index_select(t.dim() - 2, keep) for t in pe)
        pos = kwargs.get("position_ids")
        if pos is not None:
            kwargs["position_ids"] = pos.index_select(pos.dim() - 1, keep)
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 4:
            kwargs["attention_mask"] = mask.index_select(2, keep).index_select(3, keep)
        return args, kwargs

    return hook


# ---- the attention function --------------------------------------------------------------------
def vh_attn(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """transformers attention-interface contract; `out` is `(rows, q_len, H, d)` (methods.md §1.6)."""
    if scaling is None:
        scaling = module.scaling
    kv_len = key.shape[2]
    if attention_mask is not None and attention_mask.shape[-1] > kv_len:
        # A physically pruned layer holds fewer keys than layer 0, which sized the mask.
        attention_mask = attention_mask[..., -kv_len:]
    state = module.__dict__.get(_STATE_ATTR)
    ctrl = state.controller if state is not None else None
    handler = ctrl.active.get(module.layer_idx) if ctrl is not None else None
    if handler is None:
        if state is None or state.backend == "sdpa":
            return sdpa_attention_forward(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        return _explicit(module, query, key, value, attention_mask, scaling, dropout, None, None)

    call = AttnCall(module, module.layer_idx, ctrl.mode, query, key, value, scaling)
    handler.observe(call)
    if handler.explicit(call):
        out = handler.attend(call, attention_mask)
        if out is not None:
            return out, None  # no attention weights, as from sdpa
        return _explicit(module, query, key, value, attention_mask, scaling, dropout, handler, call)
    if state.backend == "sdpa":
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    return _explicit(module, query, key, value, attention_mask, scaling, dropout, None, call)


def _explicit(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
    handler: AttentionHandler | None,
    call: AttnCall | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager's op order exactly; with no handler it is bit-identical to `attn_implementation="eager"`."""
    if call is None:
        groups = module.num_key_value_groups
        key_states, value_states = repeat_kv(key, groups), repeat_kv(value, groups)
    else:
        key_states, value_states = call.key, call.value
    scores = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if handler is not None and handler.edits_scores:
        edited = handler.scores(call, scores.float())  # an fp32 copy (the same tensor in fp32 models)
        if edited is not None:
            scores = edited
    additive = _additive_mask(attention_mask, query.shape[2], key.shape[2], scores.dtype, query.device)
    if additive is not None:
        scores = scores + additive
    extra_values = None
    if call is not None and call.extra_scores is not None:
        # The score row is small; the values are not: `[V; V̄]` would copy the layer's whole value
        # cache every call, so the output is `p_real·V + p_virtual·V̄` instead (same probabilities).
        scores = torch.cat([scores, call.extra_scores.to(scores.dtype)], dim=-1)
        extra_values = call.extra_values.to(value_states.dtype)
    probs = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    if handler is not None:
        handler.probs(call, probs)
    weights = probs.to(query.dtype)
    if dropout and module.training:  # eager's dropout call is the identity otherwise
        weights = torch.nn.functional.dropout(weights, p=dropout, training=True)
    if extra_values is None:
        out = torch.matmul(weights, value_states)
    else:
        n_real = value_states.shape[2]
        out = torch.matmul(weights[..., :n_real], value_states)
        out = out + torch.matmul(weights[..., n_real:], extra_values)
    return out.transpose(1, 2).contiguous(), weights


def _additive_mask(
    mask: torch.Tensor | None, q_len: int, kv_len: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """None → bottom-right causal (nothing to add for one query); bool → 0 / finfo.min; float → as is."""
    if mask is None:
        if q_len == 1:
            return None  # a single query sees every cached key; eager adds zeros here
        return _causal_additive(q_len, kv_len, dtype, device, torch.is_inference_mode_enabled())
    if mask.dtype == torch.bool:
        return torch.where(mask, torch.zeros((), device=mask.device, dtype=dtype), torch.finfo(dtype).min)
    return mask


@functools.lru_cache(maxsize=8)
def _causal_additive(
    q_len: int, kv_len: int, dtype: torch.dtype, device: torch.device, _inference: bool
) -> torch.Tensor:
    # Query row r may attend to key j iff j <= kv_len - q_len + r (aligned bottom-right).
    rows = torch.arange(q_len, device=device)[:, None] + (kv_len - q_len)
    allowed = torch.arange(kv_len, device=device)[None, :] <= rows
    zero = torch.zeros((), device=device, dtype=dtype)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[None, None]


register()
