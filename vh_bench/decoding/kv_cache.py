"""A `DynamicCache` whose layers append in place into a pre-grown buffer (methods.md §1.1).

transformers' `DynamicLayer.update` concatenates the whole layer's keys and values with the new
step on every call: an O(N) copy per layer per decode step. `GrowingLayer` keeps one buffer per
tensor with spare capacity along the sequence axis, writes each step into it and hands attention a
view `buf[..., :n, :]`; when the buffer is full it is re-allocated with `GROWTH`× the needed
length, so appends cost amortised O(step).

Correctness rests on one rule: the buffer is only appended to while `self.keys`/`self.values` are
still the very view objects this layer produced. Every other operation of the layer API that
rewrites them (`reorder_cache`, `batch_repeat_interleave`, `batch_select_indices`, `crop`,
`offload`/`prefetch`, `reset`, or a caller assigning `layer.keys` directly) replaces those objects,
so the next `update` notices and rebuilds a fresh buffer from whatever `keys`/`values` now hold.
Consequences:

* A view returned earlier never sees its own rows change: appends write past the current length
  `n`, and `n` only shrinks through `crop`, which is followed by a rebuild into a *new* buffer
  (the old one, and any view into it, is left untouched).
* Layers are independent, so physically pruned layers (FastV/Top-K) with shorter caches and HALC's
  `crop` rollback need nothing special.
* `copy.deepcopy` (HALC's beam clones) copies only the live rows; the copy builds its own buffer.

The values appended and returned are exactly `torch.cat`'s; only the memory layout of the returned
tensors differs (a view with the buffer's strides). Nothing is registered in transformers' layer
mappings: only caches built by `GrowingDynamicCache` use `GrowingLayer`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


@dataclass(frozen=True)
class KVBytes:
    """K/V memory of the caches of one generation (issue 19: the spare capacity is not working memory)."""

    used_bytes: int  # the rows attention reads: keys + values up to each layer's length
    reserved_bytes: int  # what the buffers hold allocated: used + spare capacity

    @property
    def slack_bytes(self) -> int:
        return self.reserved_bytes - self.used_bytes


class KVTracker:
    """The `GrowingLayer`s created while it is active (`track()`), measured on demand."""

    def __init__(self) -> None:
        self.layers: list[GrowingLayer] = []

    def measure(self) -> KVBytes:
        used = reserved = 0
        for layer in self.layers:
            u, r = layer.nbytes()
            used, reserved = used + u, reserved + r
        return KVBytes(used, reserved)


_tracker: KVTracker | None = None


@contextmanager
def track() -> Iterator[KVTracker]:
    """Collect the cache layers built inside (one generation: its branches, beams and clones)."""
    global _tracker
    outer, _tracker = _tracker, KVTracker()
    try:
        yield _tracker
    finally:
        _tracker = outer


class GrowingLayer(DynamicLayer):
    """`DynamicLayer` with in-place appends into a buffer of spare sequence capacity."""

    GROWTH = 2.0  # new capacity = max(GROWTH × needed, needed + MIN_HEADROOM)
    MIN_HEADROOM = 64

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._drop_buffer()
        if _tracker is not None:
            _tracker.layers.append(self)

    def nbytes(self) -> tuple[int, int]:
        """(used, reserved) bytes of this layer's keys and values."""
        keys, values = getattr(self, "keys", None), getattr(self, "values", None)
        if not self.is_initialized or keys is None or values is None:
            return 0, 0
        used = keys.nbytes + values.nbytes
        if self._kbuf is None or keys is not self._kview:  # compact tensors: nothing spare
            return used, used
        return used, self._kbuf.nbytes + self._vbuf.nbytes

    def _drop_buffer(self) -> None:
        self._kbuf: torch.Tensor | None = None
        self._vbuf: torch.Tensor | None = None
        self._kview: torch.Tensor | None = None  # the `keys` object last handed out
        self._vview: torch.Tensor | None = None

    @property
    def capacity(self) -> int:
        """Sequence slots of the live buffer (0 when there is none)."""
        return 0 if self._kbuf is None else self._kbuf.shape[-2]

    def _buffer_valid(self, key_states: torch.Tensor, value_states: torch.Tensor) -> bool:
        kb = self._kbuf
        if kb is None or self.keys is not self._kview or self.values is not self._vview:
            return False  # something rewrote keys/values (reorder, crop, repeat, select, offload, ...)
        if kb.shape[:-2] != key_states.shape[:-2] or kb.shape[-1] != key_states.shape[-1]:
            return False
        if self._vbuf.shape[:-2] != value_states.shape[:-2] or self._vbuf.shape[-1] != value_states.shape[-1]:
            return False
        if kb.dtype != key_states.dtype or kb.device != key_states.device:
            return False
        # An inference tensor cannot be written to outside inference mode: rebuild instead.
        return not (kb.is_inference() and not torch.is_inference_mode_enabled())

    def _rebuild(self, key_states: torch.Tensor, value_states: torch.Tensor, need: int) -> None:
        """A fresh buffer holding the current keys/values in its first `n` slots."""
        cap = max(int(need * self.GROWTH), need + self.MIN_HEADROOM)
        n = self.get_seq_length()
        kb = key_states.new_empty((*key_states.shape[:-2], cap, key_states.shape[-1]))
        vb = value_states.new_empty((*value_states.shape[:-2], cap, value_states.shape[-1]))
        if n:
            kb[..., :n, :] = self.keys
            vb[..., :n, :] = self.values
        self._kbuf, self._vbuf = kb, vb

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if torch.is_grad_enabled() and (key_states.requires_grad or value_states.requires_grad):
            # In-place writes into a buffer that earlier views alias would break autograd.
            self._drop_buffer()
            return super().update(key_states, value_states, *args, **kwargs)

        n = self.get_seq_length()
        if n and (self.keys.shape[:-2] != key_states.shape[:-2] or self.keys.shape[-1] != key_states.shape[-1]):
            # Mismatched rows/heads: let torch.cat raise exactly as the stock layer would.
            return super().update(key_states, value_states, *args, **kwargs)
        n_new = key_states.shape[-2]
        need = n + n_new
        if not self._buffer_valid(key_states, value_states) or need > self.capacity:
            self._rebuild(key_states, value_states, need)
        self._kbuf[..., n:need, :] = key_states
        self._vbuf[..., n:need, :] = value_states
        self.keys = self._kview = self._kbuf[..., :need, :]
        self.values = self._vview = self._vbuf[..., :need, :]
        return self.keys, self.values

    def reset(self) -> None:
        self._drop_buffer()
        super().reset()

    _BUFFER_ATTRS = frozenset({"_kbuf", "_vbuf", "_kview", "_vview"})

    def __deepcopy__(self, memo: dict) -> "GrowingLayer":
        """Copies the live rows only (HALC clones beams by deepcopy), not the spare capacity.

        A plain deepcopy would copy each view's whole buffer storage; here the copy gets compact
        `keys`/`values` and no buffer, so its first `update` builds its own.
        """
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for name, value in self.__dict__.items():
            if name in self._BUFFER_ATTRS:
                continue
            if name in ("keys", "values") and isinstance(value, torch.Tensor):
                value = value.clone(memory_format=torch.contiguous_format)
                memo[id(self.__dict__[name])] = value
            else:
                value = copy.deepcopy(value, memo)
            new.__dict__[name] = value
        new._drop_buffer()
        if _tracker is not None:
            _tracker.layers.append(new)
        return new


class GrowingDynamicCache(DynamicCache):
    """`DynamicCache` built with `GrowingLayer` for every full-attention layer.

    Built like `DynamicCache(config=...)`; layer types other than full attention (sliding windows,
    linear attention, ...) keep transformers' classes, which LLaVA's decoder does not use.
    """

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config=config, **kwargs)
        if self.layer_class_to_replicate is DynamicLayer:
            self.layer_class_to_replicate = GrowingLayer
        self.layers = [
            GrowingLayer() if type(layer) is DynamicLayer and not layer.is_initialized else layer
            for layer in self.layers
        ]
