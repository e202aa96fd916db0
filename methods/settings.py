"""The methods' value checks, torch-free, so that a bad `method.*` value fails before torch loads.

Each method's `check` calls its function here, and `vh_bench.preflight` calls the same function on
the composed config before anything heavy is imported (issue 16: a bad value in under 3 s). One
source of truth: the functions read attributes, so they serve the method dataclass and the config
alike. The option tuples the checks name live here too and are imported by the torch modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from vh_bench.errors import ConfigError, is_int, is_number

# ---- option tuples -----------------------------------------------------------------------
PRUNING_MODES = ("physical", "mask")  # FastV / Top-K (vh_bench.decoding.pruning.MODES, held equal by a test)
TOPK_DECODE = "decode"  # Top-K's decode-step selection (VASparse's VATS alone)
NOISE_STEPS = 1000  # VCD's diffusion schedule length
KERNELS = ("auto", "cpu", "torch", "triton")  # VASparse decode-step attention paths
SCOPES = ("generated", "text", "all")  # VATS candidate scopes
NORMALIZE = ("sum", "none")
MERGES = ("dpc_knn", "none")
DETECTORS = ("grounding_dino", "owlv2", "none")
DIVERGENCES = ("halc", "jsd")
TAGGERS = ("nltk", "spacy")
SCORERS = ("blip_itm", "blip_itc")
AFTER_REPLACE = ("reselect", "reuse")  # HALC's DoLa step after a replacement (§7.7)


def finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _need(ok: bool, key: str, problem: str, fix: str = "") -> None:
    if not ok:
        raise ConfigError(f"method.{key}", problem, fix)


# ---- per method ----------------------------------------------------------------------------
def check_fastv(m: Any) -> None:
    _need(is_int(m.k) and m.k >= 1, "k", f"must be an integer >= 1, got {m.k!r}", "FastV ranks at layer k-1")
    _need(is_number(m.ratio) and 0.0 <= float(m.ratio) < 1.0, "ratio", f"must be in [0, 1), got {m.ratio!r}",
          "the fraction of image tokens dropped")  # fmt: skip
    _need(m.mode in PRUNING_MODES, "mode", f"{m.mode!r} is not one of {', '.join(PRUNING_MODES)}")


def check_topk(m: Any) -> None:
    _need(is_int(m.layer), "layer", f"must be an integer layer index, got {m.layer!r}")
    _need(is_number(m.keep_ratio) and 0.0 < float(m.keep_ratio) <= 1.0, "keep_ratio",
          f"must be in (0, 1], got {m.keep_ratio!r}")  # fmt: skip
    modes = (*PRUNING_MODES, TOPK_DECODE)
    _need(m.mode in modes, "mode", f"{m.mode!r} is not one of {', '.join(modes)}")


def check_vcd(m: Any) -> None:
    _need(is_number(m.alpha) and m.alpha >= 0, "alpha", f"must be a number >= 0, got {m.alpha!r}")
    _need(is_number(m.beta) and 0 <= m.beta <= 1, "beta", f"must be in [0, 1] (0 disables the cutoff), got {m.beta!r}")
    _need(is_int(m.noise_step) and 0 <= m.noise_step < NOISE_STEPS, "noise_step",
          f"must be an integer in [0, {NOISE_STEPS - 1}], got {m.noise_step!r}")  # fmt: skip
    _need(isinstance(m.batched, bool), "batched", f"must be true or false, got {m.batched!r}")


def _check_layers(value: Any, key: str) -> None:
    ok = value == "all" or (isinstance(value, (list, tuple)) and bool(value) and all(is_int(v) for v in value))
    _need(ok, key, f"must be 'all' or a non-empty list of layer indices, got {value!r}")


def check_vasparse(m: Any) -> None:
    for key in ("lam", "alpha", "beta"):
        value = getattr(m, key)
        _need(finite_number(value) and value >= 0, key, f"must be a number >= 0, got {value!r}")
    _need(finite_number(m.sparsity) and 0 < m.sparsity <= 1, "sparsity",
          f"must be in (0, 1] (1 keeps every key), got {m.sparsity!r}")  # fmt: skip
    v, s, p = m.vats, m.svcd, m.sap
    for key, value in (("vats.enabled", v.enabled), ("svcd.enabled", s.enabled), ("sap.enabled", p.enabled),
                       ("svcd.final_norm", s.final_norm), ("record_extras", m.record_extras)):  # fmt: skip
        _need(isinstance(value, bool), key, f"must be true or false, got {value!r}")
    _need(m.kernel in KERNELS, "kernel", f"{m.kernel!r} is not one of {', '.join(KERNELS)}")
    _need(v.scope in SCOPES, "vats.scope", f"{v.scope!r} is not one of {', '.join(SCOPES)}")
    _need(v.normalize in NORMALIZE, "vats.normalize", f"{v.normalize!r} is not one of {', '.join(NORMALIZE)}")
    _need(v.merge in MERGES, "vats.merge", f"{v.merge!r} is not one of {', '.join(MERGES)}")
    _need(finite_number(v.cluster_ratio) and 0 < v.cluster_ratio <= 1, "vats.cluster_ratio",
          f"must be in (0, 1], got {v.cluster_ratio!r}")  # fmt: skip
    _need(is_int(v.knn_k) and v.knn_k >= 1, "vats.knn_k", f"must be an integer >= 1, got {v.knn_k!r}")
    _need(is_int(v.saliency_layer), "vats.saliency_layer", f"must be a layer index, got {v.saliency_layer!r}")
    _check_layers(v.layers, "vats.layers")
    _check_layers(p.layers, "sap.layers")
    _need(finite_number(s.mask_ratio) and 0 <= s.mask_ratio <= 1, "svcd.mask_ratio", f"must be in [0, 1], got {s.mask_ratio!r}")
    _need(is_int(s.stop_layer) and s.stop_layer >= 0, "svcd.stop_layer", f"must be an integer >= 0, got {s.stop_layer!r}")
    _need(finite_number(s.plausibility) and 0 <= s.plausibility <= 1, "svcd.plausibility",
          f"must be in [0, 1] (0 disables the cutoff), got {s.plausibility!r}")  # fmt: skip


def check_dola(d: Any) -> None:
    pl = d.premature_layers
    if isinstance(pl, str):
        _need(pl == "even", "dola.premature_layers", f"{pl!r} is not 'even' or a list of layer indices")
    else:
        _need(bool(pl) and all(is_int(i) for i in pl), "dola.premature_layers", f"{pl!r} must be 'even' or a non-empty list of ints")
    _need(d.after_replace in AFTER_REPLACE, "dola.after_replace", f"{d.after_replace!r} is not one of {', '.join(AFTER_REPLACE)}")
    _need(is_number(d.relative_top) and 0.0 <= d.relative_top <= 1.0, "dola.relative_top",
          f"must be in [0, 1] (0 disables), got {d.relative_top!r}")  # fmt: skip


def check_halc(m: Any) -> None:
    _need(m.detector in DETECTORS, "detector", f"{m.detector!r} is not one of {', '.join(DETECTORS)}")
    _need(m.scorer in SCORERS, "scorer", f"{m.scorer!r} is not one of {', '.join(SCORERS)}")
    _need(m.divergence in DIVERGENCES, "divergence", f"{m.divergence!r} is not halc or jsd")
    _need(m.tagger in TAGGERS, "tagger", f"{m.tagger!r} is not nltk or spacy")
    # Types before ranges: `abc` or `2.5` must be one line naming the key, not a TypeError.
    _need(is_int(m.beam_size) and m.beam_size >= 1, "beam_size", f"must be an integer >= 1, got {m.beam_size!r}")
    _need(is_int(m.num_fov) and m.num_fov >= 2, "num_fov",
          f"must be an integer >= 2 (views are contrasted in pairs), got {m.num_fov!r}")  # fmt: skip
    n_pairs = math.comb(int(m.num_fov), 2)
    _need(is_int(m.num_pairs) and 1 <= m.num_pairs <= n_pairs, "num_pairs",
          f"must be an integer in [1, {n_pairs}], got {m.num_pairs!r}")  # fmt: skip
    _need(is_number(m.expand_ratio) and m.expand_ratio > 0, "expand_ratio", f"must be > 0, got {m.expand_ratio!r}")
    _need(is_number(m.skip_rate) and 0.0 <= m.skip_rate <= 1.0, "skip_rate", f"must be in [0, 1], got {m.skip_rate!r}")
    _need(is_number(m.contrast_weight) and m.contrast_weight >= 0, "contrast_weight",
          f"must be >= 0, got {m.contrast_weight!r}")  # fmt: skip
    if m.box_threshold is not None:
        _need(is_number(m.box_threshold) and 0.0 <= m.box_threshold <= 1.0, "box_threshold",
              f"must be in [0, 1], got {m.box_threshold!r}")  # fmt: skip
    _need(is_number(m.text_threshold) and 0.0 <= m.text_threshold <= 1.0, "text_threshold",
          f"must be in [0, 1], got {m.text_threshold!r}")  # fmt: skip
    for key in ("max_boxes", "view_cache_size", "min_committed_before_delete"):
        value = getattr(m, key)
        _need(is_int(value) and value >= 0, key, f"must be an integer >= 0, got {value!r}")
    b = m.default_box
    _need(
        isinstance(b, (list, tuple)) and len(b) == 4 and all(is_number(x) for x in b)
        and 0 <= b[0] < b[2] <= 1 and 0 <= b[1] < b[3] <= 1,
        "default_box",
        f"{b} is not [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1",
    )
    check_dola(m.dola)


# `_target_` → its value check, for the preflight (vh_bench/preflight.py:check_method).
CHECKS: dict[str, Callable[[Any], None]] = {
    "methods.fastv.FastV": check_fastv,
    "methods.topk.TopK": check_topk,
    "methods.vcd.VCD": check_vcd,
    "methods.vasparse.VASparse": check_vasparse,
    "methods.halc.HALC": check_halc,
}
