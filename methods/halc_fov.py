"""HALC fields of view (methods.md §7.5–7.6): boxes, crops, batched view logits, focal contrast."""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

Box = tuple[float, float, float, float]


# ---- boxes and crops -------------------------------------------------------------------------
def expand_box(b: Sequence[float], f: float) -> Box:
    """Grow width and height by (1 + f) about the centre, clip each side to [0, 1] (§7.5)."""
    x0, y0, x1, y1 = (float(v) for v in b)
    w, h = x1 - x0, y1 - y0
    return (max(0.0, x0 - w * f / 2), max(0.0, y0 - h * f / 2), min(1.0, x1 + w * f / 2), min(1.0, y1 + h * f / 2))


def fov_boxes(b: Sequence[float], num_fov: int, expand_ratio: float) -> list[Box]:
    """v0 = expand(b, −min(r, 0.8)), v1 = b, v_k = expand(v_{k−1}, r): exponential expansion."""
    b = tuple(float(v) for v in b)
    if num_fov == 1:
        return [b]  # type: ignore[list-item]
    views = [expand_box(b, -min(expand_ratio, 0.8)), b]
    while len(views) < num_fov:
        views.append(expand_box(views[-1], expand_ratio))
    return views  # type: ignore[return-value]


def pixel_box(b: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    """Normalised box → integer pixel box inside the image, at least 1 px per side (half-up)."""

    def edge(lo: float, hi: float, size: int) -> tuple[int, int]:
        a = min(max(math.floor(lo * size + 0.5), 0), size - 1)
        z = min(max(math.floor(hi * size + 0.5), a + 1), size)
        return a, z

    x0, x1 = edge(b[0], b[2], width)
    y0, y1 = edge(b[1], b[3], height)
    return x0, y0, x1, y1


def crop_views(image: Image.Image, boxes: Sequence[Sequence[float]]) -> list[Image.Image]:
    w, h = image.size
    return [image.crop(pixel_box(b, w, h)) for b in boxes]


# ---- divergence, pairs, candidates -----------------------------------------------------------
def pair_divergence(li: torch.Tensor, lj: torch.Tensor, kind: str = "halc") -> torch.Tensor:
    """§7.6. `halc`: 0.5·(KL(M‖p_i) + KL(M‖p_j)) as HALC's code (F.kl_div(log p, M), summed);
    `jsd`: the textbook 0.5·(KL(p_i‖M) + KL(p_j‖M)). M = (p_i + p_j)/2. Works on (..., V) logits."""
    lp_i = torch.log_softmax(li.float(), dim=-1)
    lp_j = torch.log_softmax(lj.float(), dim=-1)
    p_i, p_j = lp_i.exp(), lp_j.exp()
    mix = 0.5 * (p_i + p_j)
    log_mix = torch.log(mix)
    if kind == "halc":
        m_log_m = torch.xlogy(mix, mix)
        kl_i = (m_log_m - mix * lp_i).sum(dim=-1)
        kl_j = (m_log_m - mix * lp_j).sum(dim=-1)
    elif kind == "jsd":
        zero = torch.zeros((), dtype=mix.dtype, device=mix.device)
        kl_i = torch.where(p_i > 0, p_i * (lp_i - log_mix), zero).sum(dim=-1)
        kl_j = torch.where(p_j > 0, p_j * (lp_j - log_mix), zero).sum(dim=-1)
    else:
        raise ValueError(f"unknown divergence {kind!r}")
    return 0.5 * (kl_i + kl_j)


def rank_pairs(view_logits: torch.Tensor, num_pairs: int, kind: str = "halc") -> list[tuple[int, int]]:
    """Top `num_pairs` pairs (i < j) by divergence, descending; ties → lexicographically smaller."""
    n = view_logits.shape[0]
    pairs = list(itertools.combinations(range(n), 2))
    if not pairs:
        return []
    ii = torch.tensor([p[0] for p in pairs])
    jj = torch.tensor([p[1] for p in pairs])
    div = pair_divergence(view_logits[ii], view_logits[jj], kind).tolist()
    order = sorted(range(len(pairs)), key=lambda k: (-div[k], pairs[k]))
    return [pairs[k] for k in order[:num_pairs]]


def contrast_candidates(
    view_logits: torch.Tensor, pairs: Sequence[tuple[int, int]], weight: float, banned: Sequence[int] = ()
) -> list[int]:
    """Per pair in rank order: argmax(l_j − w·l_i), then argmax(l_i − w·l_j) (§7.6). All rows at once."""
    if not pairs:
        return []
    a = [v for i, j in pairs for v in (j, i)]
    b = [v for i, j in pairs for v in (i, j)]
    z = view_logits[a].float() - weight * view_logits[b].float()
    if banned:
        z[:, list(banned)] = float("-inf")
    return z.argmax(dim=-1).tolist()  # first maximum per row, as the argmax of each row alone


# ---- view logits -----------------------------------------------------------------------------
def crop_cache_to(cache: Any, n: int) -> None:
    """Roll a cache back to its first `n` tokens (transformers 5.2x `crop` takes −tokens_to_remove)."""
    remove = cache.get_seq_length() - n
    if remove < 0:
        raise ValueError(f"cannot crop a cache of {cache.get_seq_length()} tokens to {n}")
    if remove > 0:
        cache.crop(-remove)


@dataclass
class _ViewCache:
    cache: Any  # DynamicCache with num_fov rows: view prompt + `fed`
    fed: list[int]
    last_logits: torch.Tensor  # (num_fov, V) after `fed`


class ViewEncoder:
    """Final-layer logits of the FOV views at the end of `prompt + context` (§7.6).

    The views run as one batch of `num_fov` rows (same ids, different pixel values). With
    `cache_size > 0`, a view set's KV cache is kept (LRU, keyed by the view boxes) and later
    requests with the same boxes only feed the tokens the cache lacks (after cropping to the common
    prefix). `cache_size = 0` is the reference: a fresh batched prefill every time.
    """

    def __init__(self, adapter: Any, inputs: Any, *, cache_size: int = 0) -> None:
        self.adapter, self.inputs = adapter, inputs
        self.cache_size = int(cache_size)
        self._caches: OrderedDict[tuple, _ViewCache] = OrderedDict()
        self._pixels: dict[tuple, tuple[torch.Tensor, dict]] = {}
        self.n_forwards = 0
        self.n_fed = 0  # token-rows fed (prompt included), a cost diagnostic

    def pixel_values(self, boxes: Sequence[Box]) -> tuple[torch.Tensor, dict]:
        """Crops through the model's image processor as full images; cached per box set."""
        key = tuple(tuple(b) for b in boxes)
        if key not in self._pixels:
            image = self.inputs.image
            if image is None:
                raise ValueError("HALC needs ModelInputs.image (the original PIL image) to crop views")
            crops = crop_views(image, boxes)
            # Each view fills the prompt's image span (a family with image-dependent token counts
            # sizes the crops so that they do).
            self._pixels[key] = self.adapter.vision_batch(crops, self.inputs)
        return self._pixels[key]

    def _forward(self, cache: Any, ids: torch.Tensor, pixels: tuple[torch.Tensor, dict] | None) -> torch.Tensor:
        self.n_forwards += 1
        self.n_fed += int(ids.numel())
        pixel_values, vision_inputs = pixels if pixels is not None else (None, None)
        out = self.adapter.forward(cache=cache, input_ids=ids, pixel_values=pixel_values, vision_inputs=vision_inputs)
        return self.adapter.last_logits(out)

    def logits(self, boxes: Sequence[Box], context: Sequence[int]) -> torch.Tensor:
        """(num_fov, V) fp32 logits after `prompt + context` for each view."""
        n = len(boxes)
        key = tuple(tuple(b) for b in boxes)
        dev = self.adapter.device
        prompt = self.inputs.input_ids
        L = prompt.shape[1]
        context = list(context)
        entry = self._caches.get(key) if self.cache_size > 0 else None
        if entry is None:
            cache = self.adapter.new_cache()
            ids = torch.cat([prompt, torch.tensor([context], dtype=torch.long, device=dev)], dim=1) if context else prompt
            logits = self._forward(cache, ids.expand(n, -1).contiguous(), self.pixel_values(boxes))
            if self.cache_size > 0:
                self._remember(key, _ViewCache(cache, context, logits))
            return logits
        self._caches.move_to_end(key)
        common = 0
        for a, b in zip(entry.fed, context):
            if a != b:
                break
            common += 1
        if common == len(entry.fed) == len(context):
            return entry.last_logits
        # Keep the common prefix; at least one position must be fed to get logits.
        keep = min(common, len(context) - 1)
        if keep < 0:  # empty context: re-feed the last prompt token (never an image token)
            crop_cache_to(entry.cache, L - 1)
            ids = prompt[:, -1:]
        else:
            crop_cache_to(entry.cache, L + keep)
            ids = torch.tensor([context[keep:]], dtype=torch.long, device=dev)
        logits = self._forward(entry.cache, ids.expand(n, -1).contiguous(), None)
        entry.fed, entry.last_logits = context, logits
        return logits

    def _remember(self, key: tuple, entry: _ViewCache) -> None:
        self._caches[key] = entry
        while len(self._caches) > self.cache_size:
            self._caches.popitem(last=False)
