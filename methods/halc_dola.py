"""HALC's base decoder: DoLa with dynamic premature-layer selection (methods.md §7.1).

Mature logits are the model's own (final layer after the final norm). Premature candidates are
entries of the `output_hidden_states` tuple (0 = embeddings, i = output of layer i−1), projected by
`lm_head` without the final norm unless `norm_premature`. All arithmetic is fp32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vh_bench.decoding.contrast import plausibility_cutoff
from methods.settings import check_dola
from vh_bench.errors import ConfigError




@dataclass
class DolaConfig:
    """`method.dola.*`: premature candidates, plausibility cutoff, premature normalisation."""

    premature_layers: str | list[int] = "even"
    relative_top: float = 0.1
    norm_premature: bool = False
    # The DoLa step that follows a replacement (§7.7): `reselect` (default) picks j* afresh, like
    # every other step; `reuse` keeps the beam's last chosen premature layer, as the official code
    # does (its rolled-back re-feed does not recompute the layer choice).
    after_replace: str = "reselect"

    def check(self) -> None:
        check_dola(self)


def premature_indices(spec: str | Sequence[int], n_layers: int) -> list[int]:
    """Indices into the hidden-states tuple (length n_layers+1). `even` = {0, 2, …, n_layers−2}.

    An explicit list may use negative indices counted from the end of that tuple (−1 = the final,
    normed hidden state, i.e. the mature layer itself)."""
    if isinstance(spec, str):
        return list(range(0, n_layers - 1, 2))
    out = []
    for i in spec:
        j = i + n_layers + 1 if i < 0 else i
        if not 0 <= j <= n_layers:
            raise ConfigError(
                "method.dola.premature_layers", f"index {i} is outside the {n_layers + 1} hidden states of this model"
            )
        out.append(j)
    return out


def code_jsd_to_mature(mature: torch.Tensor, premature: torch.Tensor) -> torch.Tensor:
    """DoLa code's layer distance: 0.5·(KL(M‖p_M) + KL(M‖p_j)) / V with M = (p_M + p_j)/2 (§7.1).

    mature: (V,) logits; premature: (k, V) logits → (k,) fp32."""
    return _code_jsd(torch.log_softmax(mature.float(), dim=-1), torch.log_softmax(premature.float(), dim=-1))


def _code_jsd(lp_m: torch.Tensor, lp_j: torch.Tensor) -> torch.Tensor:
    """`code_jsd_to_mature` on log-probabilities: lp_m (V,), lp_j (k, V)."""
    mix = 0.5 * (lp_m.exp()[None, :] + lp_j.exp())
    m_log_m = torch.xlogy(mix, mix)  # 0·log 0 = 0, as F.kl_div does
    kl_m = (m_log_m - mix * lp_m[None, :]).mean(dim=-1)
    kl_j = (m_log_m - mix * lp_j).mean(dim=-1)
    return 0.5 * (kl_m + kl_j)


def relative_top_filter(logits: torch.Tensor, relative_top: float) -> torch.Tensor:
    """log_softmax with −inf below log p_max + log(relative_top) (DoLa's plausibility cutoff)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    return plausibility_cutoff(lp, lp, relative_top)


@dataclass
class DolaStep:
    scores: torch.Tensor  # (V,) final − base, −inf outside the plausible set
    premature_index: int  # chosen entry of the hidden-states tuple


def dola_scores(
    mature: torch.Tensor, premature: torch.Tensor, layer_ids: Sequence[int], relative_top: float,
    fixed: int | None = None,
) -> DolaStep:
    """§7.1: j* = argmax of the code's divergence (ties → lowest layer), scores = final − base.

    `fixed`: use this entry of `layer_ids` as j* instead (`dola.after_replace=reuse`)."""
    lp_m = torch.log_softmax(mature.float(), dim=-1)
    lp_j = torch.log_softmax(premature.float(), dim=-1)
    if fixed is None:
        pick = int(torch.argmax(_code_jsd(lp_m, lp_j)).item())  # first maximum = lowest layer among ties
    else:
        pick = list(layer_ids).index(fixed)
    final = plausibility_cutoff(lp_m, lp_m, relative_top)  # = relative_top_filter(mature, relative_top)
    base = lp_j[pick].masked_fill(torch.isneginf(final), -1000.0)
    return DolaStep(final - base, int(layer_ids[pick]))


class DolaHead:
    """Turns one forward's output (with hidden states) into DoLa scores for the last position."""

    def __init__(self, adapter, premature: str | Sequence[int], relative_top: float, norm_premature: bool) -> None:
        self.adapter = adapter
        self.layer_ids = premature_indices(premature, adapter.n_layers)
        self.relative_top = float(relative_top)
        self.norm_premature = bool(norm_premature)
        self.banned: list[int] = []  # ids never produced (see HALC: the image placeholder)
        self.last_index: int | None = None  # j* of the last `token` call (hidden-states index)

    def premature_logits(self, hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
        """(k, V) fp32: all candidates through lm_head in one matmul (the weight is read once)."""
        last = len(hidden_states) - 1
        rows = []
        for j in self.layer_ids:
            h = hidden_states[j][0, -1]
            if self.norm_premature and j != last:  # the last entry is already normed
                h = self.adapter.final_norm(h)
            rows.append(h)
        return self.adapter.lm_head(torch.stack(rows)).float()

    def scores(self, out, fixed: int | None = None) -> DolaStep:
        mature = self.adapter.last_logits(out)[0]
        step = dola_scores(mature, self.premature_logits(out.hidden_states), self.layer_ids, self.relative_top, fixed)
        if self.banned:
            step.scores[self.banned] = float("-inf")
        return step

    def token(self, out) -> int:
        step = self.scores(out)
        self.last_index = step.premature_index
        return int(torch.argmax(step.scores).item())

    def token_at(self, out, premature_index: int) -> int:
        """The token with j* fixed to `premature_index` (a hidden-states index of `layer_ids`)."""
        self.last_index = premature_index
        return int(torch.argmax(self.scores(out, fixed=premature_index).scores).item())
