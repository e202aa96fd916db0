"""The one decoding loop every method uses (methods.md §1.4): greedy, sampling and beam search.

A method supplies a `Stepper` (prefill / step / reorder / expand) that turns tokens into fp32 next-
token scores; the loop owns token selection, stopping, timing and seeding, so the same bookkeeping
(and the same timer placement) applies to every method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from vh_bench.decoding.timing import SampleTimer
from vh_bench.errors import SampleError
from vh_bench.records import GenConfig


class Stepper(Protocol):
    def prefill(self) -> torch.Tensor:
        """Run the prompt; return scores (1, V) in fp32 for the first new token."""

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one chosen token per row (rows,); return scores (rows, V) fp32."""

    def expand(self, n: int) -> None:
        """Repeat every cache and per-row state to n rows (beam search, after prefill)."""

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Select rows `beam_idx` of every cache and per-row state."""


@dataclass
class DecodeResult:
    token_ids: list[int]
    t_prefill_s: float
    t_decode_s: float
    # Beam search only: every finished hypothesis, best first (tests replay them, methods.md §8.1).
    hypotheses: list[list[int]] | None = None

    @property
    def n_new_tokens(self) -> int:
        return len(self.token_ids)


def process_sampling_scores(z: torch.Tensor, gen: GenConfig) -> torch.Tensor:
    """Temperature, then top-k (if > 0), then top-p (if < 1), on fp32 scores (methods.md §1.4)."""
    if gen.temperature != 1.0:
        z = z / gen.temperature
    if gen.top_k > 0:
        k = min(gen.top_k, z.shape[-1])
        kth = torch.topk(z, k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if gen.top_p < 1.0:
        # Same rule as transformers' TopPLogitsWarper: drop the low tail whose mass is <= 1 - top_p,
        # always keeping the most probable token.
        sorted_z, sorted_idx = torch.sort(z, descending=False, dim=-1)
        cum = sorted_z.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cum <= (1 - gen.top_p)
        remove_sorted[..., -1:] = False
        remove = remove_sorted.scatter(-1, sorted_idx, remove_sorted)
        z = z.masked_fill(remove, float("-inf"))
    return z


def _select(z: torch.Tensor, gen: GenConfig, generator: torch.Generator | None) -> int:
    if gen.strategy == "sample":
        probs = process_sampling_scores(z[0].float(), gen).softmax(dim=-1).cpu()
        if not bool(torch.isfinite(probs).all()) or float(probs.sum()) <= 0:
            raise SampleError("non-finite logits (NaN/inf): sample marked, run continues")
        return int(torch.multinomial(probs, 1, generator=generator).item())
    best = torch.argmax(z[0])  # ties → lowest id; a NaN anywhere wins the argmax
    # One host read for both the id and its score (the read synchronises anyway).
    tok, score = torch.stack([best.double(), z[0, best].double()]).tolist()
    if not math.isfinite(score):
        raise SampleError("non-finite logits (NaN/inf): sample marked, run continues")
    return int(tok)


def decode(
    stepper: Stepper,
    gen: GenConfig,
    eos_token_id: int,
    *,
    generator: torch.Generator | None = None,
    timer: SampleTimer | None = None,
) -> DecodeResult:
    """Generate one sample's tokens with `gen.strategy`; EOS counts toward the new tokens."""
    timer = timer or SampleTimer()
    if gen.strategy == "beam" and gen.num_beams > 1:
        return _beam_search(stepper, gen, eos_token_id, timer)
    if gen.strategy == "sample" and generator is None:
        raise ValueError("sampling needs the per-sample generator (methods.md §1.7)")
    timer.start()
    z = stepper.prefill()
    tok = _select(z, gen, generator)
    timer.first_token()
    tokens = [tok]
    while tok != eos_token_id and len(tokens) < gen.max_new_tokens:
        z = stepper.step(torch.tensor([tok], dtype=torch.long))
        tok = _select(z, gen, generator)
        tokens.append(tok)
    timer.stop()
    return DecodeResult(tokens, timer.prefill_s, timer.decode_s)


def _beam_search(stepper: Stepper, gen: GenConfig, eos: int, timer: SampleTimer) -> DecodeResult:
    """Deterministic beam search reproducing transformers 5.x `_beam_search` (methods.md §1.4, 1–8).

    Tie-breaking follows the same torch.topk calls on the same flattened layouts, which is what makes
    the token-for-token equality with `generate(num_beams=B)` hold.
    """
    B = gen.num_beams
    lp = gen.length_penalty
    n_keep = 2 * B  # beams_to_keep with one EOS id

    timer.start()
    z = stepper.prefill()
    stepper.expand(B)
    z = z.expand(B, -1)
    # The bookkeeping lives on the scores' device (topk ties as in `generate`, no cross-device ops).
    dev = z.device
    top_b_mask = torch.arange(n_keep, device=dev) < B
    running_scores = torch.full((B,), -1e9, dtype=torch.float32, device=dev)
    running_scores[0] = 0.0
    running: list[list[int]] = [[] for _ in range(B)]
    fin_scores = torch.full((B,), -1e9, dtype=torch.float32, device=dev)
    fin_tokens: list[list[int]] = [[] for _ in range(B)]
    fin_done = torch.zeros(B, dtype=torch.bool, device=dev)
    heuristic_unsatisfied = True
    first = True
    while True:
        lsm = torch.log_softmax(z.float(), dim=-1)  # renormalises a method's processed scores
        V = lsm.shape[-1]
        acc = (lsm + running_scores[:, None]).reshape(-1)
        cand_scores, cand_idx = torch.topk(acc, k=n_keep)
        if bool(torch.isnan(cand_scores).any()) or bool(torch.isposinf(cand_scores).any()):
            raise SampleError("non-finite logits (NaN/inf): sample marked, run continues")
        cand_rows = torch.div(cand_idx, V, rounding_mode="floor")
        cand_tok = cand_idx % V
        gen_len = len(running[0]) + 1  # generated length including the candidate token
        hits = (cand_tok == eos) | (gen_len >= gen.max_new_tokens)

        # Finished hypotheses: only top-B candidates, only while improvement is still possible.
        finishing = hits & top_b_mask
        norm = cand_scores / (gen_len**lp)
        norm = norm + (~finishing).float() * -1e9
        if not heuristic_unsatisfied:
            norm = norm + -1e9
        merged = torch.cat([fin_scores, norm])
        order = torch.topk(merged, k=B).indices
        # One host read per tensor and step (each would be a device sync on a GPU).
        rows_h, tok_h, finishing_h, done_h = cand_rows.tolist(), cand_tok.tolist(), finishing.tolist(), fin_done.tolist()
        new_tokens, new_done = [], []
        for i in order.tolist():
            if i < B:
                new_tokens.append(fin_tokens[i])
                new_done.append(done_h[i])
            else:
                c = i - B
                new_tokens.append(running[rows_h[c]] + [tok_h[c]])
                new_done.append(finishing_h[c])
        fin_scores = merged[order]
        fin_tokens = new_tokens
        fin_done = torch.tensor(new_done, dtype=torch.bool, device=dev)

        # Running beams: best B candidates that did not finish.
        unfinished = cand_scores + hits.float() * -1e9
        run_sel = torch.topk(unfinished, k=B).indices
        beam_idx = cand_rows[run_sel]
        next_tok = cand_tok[run_sel]
        running_scores = unfinished[run_sel]
        running = [running[r] + [t] for r, t in zip(beam_idx.tolist(), next_tok.tolist())]
        if first:
            timer.first_token()
            first = False

        # Early-stop heuristic (early_stopping=False): best running score at the current length.
        worst_fin = torch.where(fin_done, fin_scores.min(), -1e9)
        best_run = running_scores[0] / (gen_len**lp)
        heuristic_unsatisfied = heuristic_unsatisfied and bool((best_run > worst_fin).any())
        if not heuristic_unsatisfied or bool(hits.all()):
            break
        stepper.reorder(beam_idx)
        z = stepper.step(next_tok)
    timer.stop()
    hyps = [list(t) for t, done in zip(fin_tokens, fin_done.tolist()) if done]
    return DecodeResult(fin_tokens[0], timer.prefill_s, timer.decode_s, hypotheses=hyps)
