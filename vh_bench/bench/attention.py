"""Attention-layer benchmark: methods side by side in one process, interleaved, on one sample.

    python -m vh_bench.bench.attention [--repeats 6] [--max-new-tokens 64]

On the random-weight bench model (configs/model/bench.yaml: 576 image tokens, 8 layers, hidden
512) it prints per method the prefill latency, decode and end-to-end tokens/s and the ratios to a baseline,
answering the two questions of the attention-control issue: FastV's end-to-end speed-up over
vanilla at R = 0.5, and the cost of the controller when it does nothing (vs transformers' eager).
Only ratios carry over to a real model and GPU.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import median
from typing import Any

import torch
from PIL import Image

from vh_bench.config import compose, to_plain
from vh_bench.data.images import two_shapes
from vh_bench.decoding.attention import AttentionController, AttentionHandler, ControlledStepper
from vh_bench.decoding.branch import Branch
from vh_bench.decoding.method import Method
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.metrics.speed import Timing, speed_summary
from vh_bench.models.llava import LlavaAdapter, ModelInputs
from vh_bench.models.tiny import TinySpec, build_tiny_llava
from vh_bench.paths import cache_dir
from vh_bench.records import GenConfig

log = logging.getLogger(__name__)


def bench_spec() -> TinySpec:
    """configs/model/bench.yaml's model (realistic proportions for a CPU), as `model=bench` builds it.

    Read when the bench runs (composing at import would reset Hydra's global state of any importer).
    """
    return TinySpec(**to_plain(compose(["model=bench"]).model.tiny))


# ---- contenders that exist only to measure the attention layer ---------------------------------
class _Passive(AttentionHandler):
    """Explicit path on every call, nothing read or changed: the cost of the handler machinery."""


@dataclass
class IdleController(Method):
    """Vanilla with a controller installed; `every_layer`: a do-nothing handler on every layer."""

    name = "idle_controller"
    every_layer: bool = False

    def stepper(self, adapter: LlavaAdapter, inputs: ModelInputs, seeds: SampleSeeds) -> ControlledStepper:
        ctrl = AttentionController(adapter.n_layers)
        if self.every_layer:
            ctrl.add_handler(range(adapter.n_layers), _Passive())
        return ControlledStepper(Branch(adapter, inputs), ctrl)


class OnAdapter(Method):
    """Runs `method` on another adapter (e.g. a stock-attention reference with the same weights)."""

    def __init__(self, method: Method, adapter: LlavaAdapter) -> None:
        self.method, self.adapter = method, adapter
        self.name = f"{method.name}@{adapter.attn_setting}"

    def generate(self, adapter, inputs, gen, seeds):  # noqa: D102 - the sample's tensors are shared
        return self.method.generate(self.adapter, inputs, gen, seeds)


# ---- the measurement -----------------------------------------------------------------------------
def speed_side_by_side(
    adapter: LlavaAdapter,
    methods: Mapping[str, Method],
    inputs: ModelInputs,
    gen: GenConfig,
    repeats: int,
    *,
    warmup: int = 1,
    baseline: str | None = None,
    ratios: bool = True,
) -> list[dict[str, Any]]:
    """Time every method `warmup + repeats` times, interleaved round by round, on one sample.

    Returns one dict per method: the speed aggregates of `vh_bench.metrics.speed` over the timed
    rounds, plus (with `ratios`) `decode_ratio`/`e2e_ratio` to `baseline` (default: the first
    method) as ratios of the aggregates and as medians of per-round ratios (robust to a noisy,
    shared CPU). Callers that compute their own ratios pass `ratios=False`: a baseline with a single
    new token has no decode rate to divide by.
    """
    names = list(methods)
    baseline = baseline or names[0]
    timings: dict[str, list[Timing]] = {n: [] for n in names}
    seeds = SampleSeeds(0, "bench")
    for r in range(warmup + repeats):
        for name in names:
            g = methods[name].generate(adapter, inputs, gen, seeds)
            if r >= warmup:
                timings[name].append(Timing(g.n_new_tokens, g.t_prefill_s, g.t_decode_s))
        log.info("round %d/%d done", r + 1, warmup + repeats)

    rows = [{"method": n, **speed_summary(timings[n]), "timings": timings[n]} for n in names]
    return with_ratios(rows, baseline) if ratios else rows


def _per_round(t: Timing) -> tuple[float, float]:
    return max(t.n_new_tokens - 1, 0) / t.t_decode_s, t.n_new_tokens / (t.t_prefill_s + t.t_decode_s)


def with_ratios(rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """Rows with `*_ratio` fields relative to the row named `baseline` (aggregate and per-round median)."""
    base = next(r for r in rows if r["method"] == baseline)
    out = []
    for r in rows:
        pairs = [(_per_round(t), _per_round(b)) for t, b in zip(r["timings"], base["timings"])]
        out.append(
            {
                **r,
                "baseline": baseline,
                "decode_ratio": r["decode_tokens_per_s"] / base["decode_tokens_per_s"],
                "e2e_ratio": r["e2e_tokens_per_s"] / base["e2e_tokens_per_s"],
                "prefill_ratio": r["prefill_ms_mean"] / base["prefill_ms_mean"],
                "decode_ratio_median": median(a[0] / b[0] for a, b in pairs),
                "e2e_ratio_median": median(a[1] / b[1] for a, b in pairs),
            }
        )
    return out


def format_rows(rows: list[dict[str, Any]]) -> str:
    head = f"{'method':<28}{'prefill ms':>11}{'decode tok/s':>14}{'e2e tok/s':>11}{'new tok':>8}" \
           f"{'decode ×':>10}{'(median)':>9}{'e2e ×':>8}{'(median)':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['method']:<28}{r['prefill_ms_mean']:>11.1f}{r['decode_tokens_per_s']:>14.1f}"
            f"{r['e2e_tokens_per_s']:>11.2f}{r['mean_new_tokens']:>8.1f}{r['decode_ratio']:>10.3f}"
            f"{r['decode_ratio_median']:>9.3f}{r['e2e_ratio']:>8.3f}{r['e2e_ratio_median']:>9.3f}"
        )
    return "\n".join(lines) + f"\n(ratios relative to {rows[0]['baseline']}; median = of per-round ratios)"


def bench_image() -> Image.Image:
    return two_shapes((480, 360), (40, 120, 200), (40, 50, 220, 300), (250, 80, 450, 280))


def main(argv: list[str] | None = None) -> int:
    from methods.fastv import FastV
    from methods.topk import TopK
    from methods.vanilla import Vanilla

    ap = argparse.ArgumentParser(prog="python -m vh_bench.bench.attention", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--no-eager", action="store_true", help="only vanilla, FastV and Top-K (no controller-cost rows)")
    ap.add_argument(
        "--keep-denormals",
        action="store_true",
        help="do not flush denormals (the random model's peaked attention makes eager matmuls crawl)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    # With initializer_range 0.3 a third of the attention probabilities are denormal floats; CPU
    # matmuls over them are 10-70x slower (eager only; sdpa's kernel is not hit), which measures the
    # random weights, not the methods. Flushing them is a process-wide CPU setting for this benchmark.
    flushed = False if args.keep_denormals else torch.set_flush_denormal(True)
    spec = bench_spec()
    path = str(build_tiny_llava(spec, cache_dir() / "models"))
    sdpa = LlavaAdapter.load(path)  # vh_attn, plain path = sdpa (the harness setting)
    if not args.no_eager:
        explicit = LlavaAdapter.load(path, attn_implementation="eager")  # vh_attn, plain path = explicit
        stock_eager = LlavaAdapter.load(path, attn_implementation="eager", stock_attention=True)
    inputs = sdpa.prepare(bench_image(), "Please describe this image in detail.")
    gen = GenConfig(strategy="greedy", max_new_tokens=args.max_new_tokens)
    print(f"bench model: {spec}\nprompt length {inputs.length}, image tokens {inputs.n_image_tokens}, "
          f"threads {torch.get_num_threads()}, flush denormals {flushed}, {gen}\n")

    with torch.inference_mode():
        methods = {
            "vanilla (vh_attn/sdpa)": Vanilla(),
            "fastv k=2 r=0.5": FastV(),
            "topk layer=0 keep=0.75": TopK(),
        }
        if not args.no_eager:
            methods |= {
                "eager (stock)": OnAdapter(Vanilla(), stock_eager),
                "vh_attn/eager, no ctrl": OnAdapter(Vanilla(), explicit),
                "vh_attn/eager, idle ctrl": OnAdapter(IdleController(), explicit),
                "vh_attn/eager, passive all": OnAdapter(IdleController(every_layer=True), explicit),
            }
        rows = speed_side_by_side(sdpa, methods, inputs, gen, args.repeats)
    print(format_rows(rows))
    if not args.no_eager:
        eager = with_ratios([r for r in rows if "eager" in r["method"]], "eager (stock)")
        print("\n" + format_rows(eager))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
