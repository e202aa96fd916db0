"""VASparse (CVPR 2025, arXiv 2501.06553), the paper's equations (methods.md §6).

Three switchable components (Table 4 ablations):
  * VATS (eq. (4)–(5)): per decode step, layer, row and head, keep the top-S candidate keys by
    δ = s² + λ·P and merge the dropped ones into DPC-kNN virtual keys (`methods.vasparse_attention`);
  * SVCD (eq. (6)): z = (1+α)·l_θ − α·l_φ with a plausibility cutoff, l_φ from a cheap visually
    sparse early-exit stream (`methods.vasparse_svcd`);
  * SAP (eq. (7)): decode scores s·(1+β−β·w), w = softmax of the attention each key has received.
The authors' released code implements neither VATS nor SAP (§6.6); this is the paper, not the code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from methods.vasparse_attention import Layout, VASparseLayer, VASparseState, VATSParams
from methods.vasparse_fused import load_kernel
from methods.vasparse_fused import resolve as resolve_kernel
from methods.settings import check_vasparse
from methods.vasparse_svcd import EmbeddingContrast, SparseContrastBranch, draw_image_mask
from vh_bench.decoding.attention import AttentionController, ControlledStepper
from vh_bench.decoding.branch import Branch
from vh_bench.decoding.contrast import contrast_scores, plausibility_cutoff
from vh_bench.decoding.method import Method
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError
from vh_bench.models.llava import LlavaAdapter, ModelInputs
from vh_bench.records import GenConfig

@dataclass
class VATSConfig:
    enabled: bool = True
    scope: str = "generated"
    layers: Any = "all"  # "all" or a list of layer indices (negatives count from the end)
    normalize: str = "sum"
    merge: str = "dpc_knn"
    cluster_ratio: float = 0.5
    knn_k: int = 5
    saliency_layer: int = -1


@dataclass
class SVCDConfig:
    enabled: bool = True
    mask_ratio: float = 0.5
    stop_layer: int = 0
    final_norm: bool = True
    plausibility: float = 0.1


@dataclass
class SAPConfig:
    enabled: bool = True
    layers: Any = "all"


def _block(cls: type, value: Any, key: str) -> Any:
    """A config block (dict from Hydra, or the dataclass itself) → its dataclass; unknown keys fail."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}", "is not a VASparse key", f"known: {', '.join(sorted(known))}")
    return cls(**value)


def resolve_layers(value: Any, n_layers: int, key: str) -> list[int]:
    if value == "all":
        return list(range(n_layers))
    out = []
    for v in value:
        idx = v + n_layers if v < 0 else v
        if not 0 <= idx < n_layers:
            raise ConfigError(key, f"layer {v} is out of range for a model with {n_layers} decoder layers")
        out.append(idx)
    return sorted(set(out))


@dataclass(frozen=True)
class Roles:
    """Which components run in a generation, and on which layers."""

    vats_layers: frozenset[int]
    sap_layers: frozenset[int]
    saliency_layer: int | None
    contrast: bool  # the SVCD contrast stream


def active_roles(method: "VASparse", n_layers: int) -> Roles:
    """A component whose knob is zeroed does not run, so the plain attention path stays bit-exact.

    Each identity is exact in the math, but an explicit-path layer computes the same attention with
    a different op order than sdpa (§1.6), which in bfloat16 moves logits by more than a top-2
    margin. So: S = 1 keeps every key whatever λ (VATS and its saliency layer are off); β = 0 makes
    s·(1 + β − β·w) = s (no SAP); α = 0 makes z = l (no contrast stream; the plausibility cutoff
    on the main logits still applies while SVCD is enabled, so z is unchanged).
    """
    vats, sap = method.vats, method.sap
    vats_on = vats.enabled and method.sparsity < 1
    vats_layers = frozenset(resolve_layers(vats.layers, n_layers, "method.vats.layers")) if vats_on else frozenset()
    sap_on = sap.enabled and method.beta != 0
    sap_layers = frozenset(resolve_layers(sap.layers, n_layers, "method.sap.layers")) if sap_on else frozenset()
    saliency_layer = None
    if vats_on and method.lam != 0:  # P is only needed when λ weighs it
        saliency_layer = resolve_layers([vats.saliency_layer], n_layers, "method.vats.saliency_layer")[0]
    return Roles(vats_layers, sap_layers, saliency_layer, method.svcd.enabled and method.alpha != 0)


class VASparseStepper:
    """Main branch under the attention controller + the SVCD contrast stream."""

    def __init__(self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds, method: "VASparse") -> None:
        self.adapter = adapter
        self.inputs = inputs
        self.method = method
        n = adapter.n_layers
        vats, svcd = method.vats, method.svcd
        self.controller = AttentionController(n)
        self.state = VASparseState(
            Layout(inputs.length, inputs.image_start, inputs.n_image_tokens), record=method.record_extras
        )
        self.controller.add_row_state(self.state)
        self.roles = roles = active_roles(method, n)
        vats_layers, sap_layers, saliency_layer = roles.vats_layers, roles.sap_layers, roles.saliency_layer
        params = VATSParams(
            method.lam, method.sparsity, vats.scope, vats.normalize, vats.merge, vats.cluster_ratio, vats.knn_k
        )
        method.resolved_kernel = resolve_kernel(method.kernel, adapter.device, adapter.dtype)
        kernel = load_kernel(method.resolved_kernel)
        self.handlers: dict[int, VASparseLayer] = {}
        saliency_layers = {saliency_layer} if saliency_layer is not None else set()
        for layer in sorted(vats_layers | sap_layers | saliency_layers):
            self.handlers[layer] = self.controller.add_handler(
                layer,
                VASparseLayer(
                    self.state,
                    vats=params if layer in vats_layers else None,
                    sap_beta=float(method.beta) if layer in sap_layers else None,
                    saliency=layer == saliency_layer,
                    kernel=kernel,
                ),
            )
        if svcd.enabled and svcd.stop_layer > n:
            raise ConfigError("method.svcd.stop_layer", f"{svcd.stop_layer} exceeds the model's {n} decoder layers")
        self.seeds = seeds
        self.image_mask: torch.Tensor | None = None
        self.main: Branch | None = None
        self.driven: ControlledStepper | None = None  # `main` under the controller (modes, beams)
        self.contrast: EmbeddingContrast | SparseContrastBranch | None = None
        self.last_logits: torch.Tensor | None = None

    def _combine(self, l_main: torch.Tensor, l_contrast: torch.Tensor | None) -> torch.Tensor:
        self.last_logits = l_main
        svcd = self.method.svcd
        if not svcd.enabled:
            return l_main
        if l_contrast is None:  # α = 0: (1+0)·l − 0·l_φ = l, bit for bit; the cutoff still applies
            return plausibility_cutoff(l_main.float(), l_main.float(), svcd.plausibility)
        return contrast_scores(l_main, l_contrast, self.method.alpha, svcd.plausibility)

    def _contrast(self, run) -> torch.Tensor | None:
        if self.contrast is None:
            return None
        self.controller.mode = "branch"  # plain attention: no VATS, no SAP, no recording
        try:
            return run(self.contrast)
        finally:
            self.controller.mode = "decode"

    def prefill(self) -> torch.Tensor:
        svcd = self.method.svcd
        embeds = None
        if self.roles.contrast:  # drawn here so that it is timed with the rest of the method (§1.8)
            self.image_mask = draw_image_mask(self.inputs, svcd.mask_ratio, self.seeds.torch_generator("svcd_mask"))
        if self.roles.contrast and svcd.stop_layer > 0:
            # Both streams read the same projected image features (methods.md §1.5).
            embeds = self.adapter.build_inputs_embeds(self.inputs)
            self.main = Branch(self.adapter, self.inputs, inputs_embeds=embeds)
            self.contrast = SparseContrastBranch(
                self.adapter, self.inputs, self.image_mask, stop_layer=svcd.stop_layer, final_norm=svcd.final_norm
            )
        else:
            self.main = Branch(self.adapter, self.inputs)
            if self.roles.contrast:
                self.contrast = EmbeddingContrast(self.adapter, self.inputs, final_norm=svcd.final_norm)
        self.driven = ControlledStepper(self.main, self.controller)
        l_main = self.driven.prefill()
        return self._combine(l_main, self._contrast(lambda c: c.prefill(embeds)))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        l_main = self.driven.step(tokens)
        return self._combine(l_main, self._contrast(lambda c: c.step(tokens)))

    def expand(self, n: int) -> None:
        self.driven.expand(n)
        if self.contrast is not None:
            self.contrast.expand(n)

    def reorder(self, beam_idx: torch.Tensor) -> None:
        self.driven.reorder(beam_idx)
        if self.contrast is not None:
            self.contrast.reorder(beam_idx)


@dataclass
class VASparse(Method):
    """Keys of methods.md §9: `lam`, `alpha`, `beta`, `sparsity` on top; blocks `vats`, `svcd`, `sap`.

    `record_extras` (default false) adds per-sample diagnostics to the sample line (mean fraction of
    keys kept per VATS call, mean SAP sink weight, masked image tokens); it changes no output and is
    therefore not part of the fingerprint.
    """

    lam: float = 0.1
    alpha: float = 0.1
    beta: float = 0.1
    sparsity: float = 0.9
    vats: VATSConfig = field(default_factory=VATSConfig)
    svcd: SVCDConfig = field(default_factory=SVCDConfig)
    sap: SAPConfig = field(default_factory=SAPConfig)
    record_extras: bool = False
    kernel: str = "auto"  # auto | cpu | triton | torch: how decode-step attention runs (methods.vasparse_fused)
    name = "vasparse"

    def __post_init__(self) -> None:
        self.resolved_kernel: str | None = None
        self.vats = _block(VATSConfig, self.vats, "method.vats")
        self.svcd = _block(SVCDConfig, self.svcd, "method.svcd")
        self.sap = _block(SAPConfig, self.sap, "method.sap")

    def hyperparameters(self) -> dict[str, Any]:
        hp = {k: getattr(self, k) for k in ("lam", "alpha", "beta", "sparsity")}
        for block in ("vats", "svcd", "sap"):
            hp[block] = asdict(getattr(self, block))
        # The kernels agree to float rounding, not bit for bit: a different setting is another run.
        hp["kernel"] = self.kernel
        return hp

    @property
    def label(self) -> str:
        """Display name in results and tables: the Table 4 components switched off, if any."""
        off = [name for name, gone in (("VATS", not self.vats.enabled), ("P", self.lam == 0),
                                       ("SVCD", not self.svcd.enabled), ("S^m", self.svcd.mask_ratio == 0),
                                       ("SAP", not self.sap.enabled)) if gone]
        return self.name + (" w/o " + ", ".join(off) if off else "")

    def implementation(self) -> dict[str, Any]:
        """What ran, for results.json: the kernel `auto` resolved to (None before any generation)."""
        return {"vasparse_kernel": self.resolved_kernel}

    def check(self, gen: GenConfig) -> None:
        super().check(gen)
        check_vasparse(self)

    def check_runtime(self, device: str, dtype: torch.dtype) -> None:
        # `kernel=cpu` off a CPU or float32 fails here; a kernel that must be built is built now.
        resolve_kernel(self.kernel, device, dtype)

    def stepper(self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds) -> VASparseStepper:
        return VASparseStepper(adapter, inputs, seeds, self)

    def extras(self, stepper: Any) -> dict[str, Any]:
        if not self.record_extras:
            return {}
        out: dict[str, Any] = stepper.state.extras()
        if stepper.image_mask is not None:
            out["svcd_n_masked"] = int(stepper.image_mask.numel())
        return out
