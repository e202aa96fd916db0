"""Results directories written by the tests: hand-made results.json files with known numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def make_result(
    *,
    model: str = "llava-1.5-7b",
    dataset: str = "coco",
    method: str = "vanilla",
    label: str | None = None,
    hyper: dict[str, Any] | None = None,
    strategy: str = "greedy",
    num_beams: int = 1,
    max_new: int = 64,
    seed: int = 0,
    chair_s: float | None = None,
    chair_i: float | None = None,
    tps: float | None = None,
    comparable: bool = True,
    pope: tuple[str, float] | None = None,  # (split, f1)
    opope: dict[str, float] | None = None,
    gpu: str = "A100",
    n_samples: int = 10,
    limit: int | None = None,
    sample_set: str | None = None,
    chair_ci: dict[str, tuple[float, float]] | None = None,  # CHAIRs/CHAIRi → (low, high) fractions
    chair_units: dict[str, Any] | None = None,
    pope_extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    if chair_s is not None:
        metrics["chair"] = {"CHAIRs": chair_s, "CHAIRi": chair_i, "Recall": 0.5, "avg_tokens": 60.0, "Len": 0.6}
        if chair_ci is not None:
            est = {"CHAIRs": chair_s, "CHAIRi": chair_i}
            metrics["chair"]["ci"] = {k: {"estimate": est[k], "low": lo, "high": hi, "n_units": n_samples}
                                      for k, (lo, hi) in chair_ci.items()}  # fmt: skip
        if chair_units is not None:
            metrics["units"] = {"chair": chair_units}
    if opope is not None:
        metrics["opope"] = {"objects_source": "gt_cache", "beta": 1.0, "splits": {s: {"f1": f} for s, f in opope.items()}}
    if pope is not None:
        # data.pope's scorer puts the split's metrics at the top level of `metrics`.
        metrics.update({"source": "coco", "split": pope[0], "f1": pope[1], "accuracy": 0.8, "yes_ratio": 0.5, **(pope_extra or {})})
    run = f"{model}-{dataset}-{method}-{json.dumps(hyper, sort_keys=True)}-{strategy}-{seed}-{pope}"
    return {
        "run_dir": f"/x/runs/{abs(hash(run)) % 10**8:08d}",
        "model": model,
        "dataset": dataset if pope is None else "pope",
        "task": "pope" if pope else "caption",
        "method": method,
        "method_label": label or method,
        "hyperparameters": hyper or {},
        "generation": {"strategy": strategy, "num_beams": num_beams, "max_new_tokens": max_new, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "length_penalty": 1.0},
        "seed": seed,
        "dtype": "float16",
        "attention": {"text": "vh_attn", "plain_kernel": "sdpa", "vision": "sdpa"},
        "n_samples": n_samples,
        "n_done": n_samples,
        "n_errors": 0,
        "limit": limit,
        "sample_set": sample_set or f"set-{dataset}-{n_samples}-{limit}",
        "metrics": metrics,
        "speed": {"decode_tokens_per_s": tps, "e2e_tokens_per_s": tps, "prefill_ms_mean": 100.0, "comparable": comparable},
        "data": {"split": pope[0]} if pope else {},
        "device": {"device": "cuda", "gpu": gpu},
    }


# CHAIR runs: vanilla with three seeds, FastV swept over k, VCD with one seed, HALC without timings.
CHAIR_RUNS = [
    make_result(seed=0, chair_s=0.50, chair_i=0.150, tps=10.0),
    make_result(seed=1, chair_s=0.52, chair_i=0.140, tps=12.0),
    make_result(seed=2, chair_s=0.54, chair_i=0.160, tps=14.0),
    make_result(method="fastv", label="FastV", hyper={"k": 2, "ratio": 0.5}, chair_s=0.55, chair_i=0.17, tps=15.0),
    make_result(method="fastv", label="FastV", hyper={"k": 3, "ratio": 0.5}, chair_s=0.45, chair_i=0.13, tps=9.0),
    make_result(method="vcd", label="VCD", hyper={"alpha": 1.0}, chair_s=0.48, chair_i=0.12, tps=6.0, comparable=False),
    make_result(model="llava-1.5-13b", seed=0, chair_s=0.40, chair_i=0.10, tps=8.0, gpu="H100"),
]

POPE_RUNS = [
    make_result(seed=s, pope=(split, f1 + 0.01 * s))
    for s in (0, 1)
    for split, f1 in (("random", 0.90), ("popular", 0.85), ("adversarial", 0.80))
] + [
    make_result(method="vcd", label="VCD", hyper={"alpha": 1.0}, pope=("random", 0.88)),
    make_result(opope={"random": 0.70, "popular": 0.60, "adversarial": 0.50}),
]


def write_results(root: Path, results: list[dict[str, Any]]) -> Path:
    for i, res in enumerate(results):
        d = root / "runs" / f"r{i:02d}"
        d.mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(res))
    return root
