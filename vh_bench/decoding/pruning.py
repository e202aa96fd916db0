"""Image-token pruning shared by FastV (methods.md §4) and Top-K (§5), on the attention-control layer.

Once, at the main-branch prefill, the last prompt token's head-averaged attention at the ranking
layer orders the image tokens; the top `n_keep` stay. Every later layer then either physically
computes and caches only the kept sequence (`physical`, original RoPE positions) or masks the
dropped image keys on the explicit path (`mask`, verification).
"""

from __future__ import annotations

import math

import torch

from vh_bench.decoding.attention import (
    AttentionController,
    AttentionHandler,
    AttnCall,
    ControlledStepper,
    SequencePrune,
)
from vh_bench.decoding.branch import Branch
from vh_bench.models.llava import LlavaAdapter, ModelInputs

MODES = ("physical", "mask")


def round_half_up(x: float) -> int:
    """floor(x + 0.5): counts never use Python's banker's rounding (methods.md §0)."""
    return int(math.floor(x + 0.5))


def rank_image_tokens(
    last_row_probs: torch.Tensor, image_start: int, n_image: int, n_keep: int
) -> torch.Tensor:
    """Kept image positions, ascending: top `n_keep` by value, ties to the lower position (§4.2).

    `last_row_probs` is `(H, kv_len)`: the last prompt token's attention probabilities per head.
    """
    scores = last_row_probs.float().mean(dim=0)[image_start : image_start + n_image]
    order = torch.sort(scores, descending=True, stable=True).indices  # stable: equal → lower index first
    kept = order[:n_keep] + image_start
    return torch.sort(kept).values


class LastRowRanker(AttentionHandler):
    """At the ranking layer, during prefill: softmax(scale·q_{L−1}·Kᵀ) of the last prompt row only.

    Observes and leaves the layer's own output on the plain path.
    """

    modes = frozenset({"prefill"})

    def __init__(self, pruning: "ImageTokenPruning") -> None:
        self.pruning = pruning

    def observe(self, call: AttnCall) -> None:
        q = call.query[:1, :, -1:, :]  # prefill has one row; the last query is the last prompt token
        s = torch.matmul(q, call.key[:1].transpose(2, 3)) * call.scaling  # eager's op order
        probs = torch.softmax(s, dim=-1, dtype=torch.float32)[0, :, 0, :]  # (H, L); the last row masks nothing
        self.pruning.set_kept_image(
            rank_image_tokens(probs, self.pruning.image_start, self.pruning.n_image, self.pruning.n_keep)
        )

    def explicit(self, call: AttnCall) -> bool:
        return False


class DroppedKeyMask(AttentionHandler):
    """Masking mode (§4.4): the dropped keys get `finfo.min` for every query, prefill and decode."""

    def __init__(self, dropped: torch.Tensor | None = None) -> None:
        self.dropped = dropped

    def scores(self, call: AttnCall, s: torch.Tensor) -> torch.Tensor | None:
        if self.dropped is None or self.dropped.numel() == 0:
            return None
        return s.index_fill_(-1, self.dropped.to(s.device), torch.finfo(s.dtype).min)


class ImageTokenPruning:
    """The pruning plan of one sample: which layer ranks, how many image tokens stay, how they go."""

    def __init__(
        self, controller: AttentionController, inputs: ModelInputs, *, rank_layer: int, n_keep: int, mode: str
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"pruning mode {mode!r} is not one of {MODES}")
        self.controller = controller
        self.rank_layer = controller.layer_index(rank_layer)
        self.image_start = inputs.image_start
        self.n_image = inputs.n_image_tokens
        self.prompt_length = inputs.length
        self.n_keep = n_keep
        self.mode = mode
        self.kept_image: torch.Tensor | None = None
        self.keep: torch.Tensor | None = None  # all kept prompt positions, ascending
        self.dropped: torch.Tensor | None = None
        self._prune: SequencePrune | None = None
        self._mask: DroppedKeyMask | None = None
        if n_keep >= self.n_image:
            # Nothing to drop (FastV ratio 0, Top-K keep_ratio 1): no ranking on the explicit path and
            # no pruning, so every layer takes the plain path and the run is vanilla bit for bit.
            self.set_kept_image(torch.arange(self.image_start, self.image_start + self.n_image))
            return
        controller.add_handler(self.rank_layer, LastRowRanker(self))
        first_pruned = self.first_pruned_layer
        if first_pruned < controller.n_layers:
            if mode == "physical":
                self._prune = controller.prune_sequence(first_pruned)
            else:
                self._mask = DroppedKeyMask()
                controller.add_handler(range(first_pruned, controller.n_layers), self._mask)

    @property
    def first_pruned_layer(self) -> int:
        return self.rank_layer + 1

    def set_kept_image(self, kept_image: torch.Tensor) -> None:
        device = kept_image.device
        self.kept_image = kept_image
        is_image = torch.zeros(self.prompt_length, dtype=torch.bool, device=device)
        is_image[self.image_start : self.image_start + self.n_image] = True
        keep_mask = ~is_image
        keep_mask[kept_image] = True
        self.keep = torch.nonzero(keep_mask).flatten()
        self.dropped = torch.nonzero(~keep_mask).flatten()
        if self._prune is not None:
            self._prune.keep = self.keep
        if self._mask is not None:
            self._mask.dropped = self.dropped


class PruningStepper(ControlledStepper):
    """The main branch of FastV / Top-K; `pruning` exposes the kept set after the prefill."""

    def __init__(self, branch: Branch, controller: AttentionController, pruning: ImageTokenPruning) -> None:
        super().__init__(branch, controller)
        self.pruning = pruning

    def extras(self) -> dict[str, Any]:
        """FastV's and Top-K's per-sample record of what was pruned."""
        p = self.pruning
        return {"n_image": p.n_image, "n_keep_image": p.n_keep, "first_pruned_layer": p.first_pruned_layer}


def image_pruning_stepper(
    adapter: LlavaAdapter, inputs: ModelInputs, *, rank_layer: int, n_keep: int, mode: str
) -> PruningStepper:
    controller = AttentionController(adapter.n_layers)
    pruning = ImageTokenPruning(controller, inputs, rank_layer=rank_layer, n_keep=n_keep, mode=mode)
    return PruningStepper(Branch(adapter, inputs), controller, pruning)
