"""`python -m vh_bench.bench launches [method=a,b+key=value,...] [overrides...]`: kernels per decode step.

On a GPU at batch 1 a decode step of a 7B model is bound by kernel launches as much as by memory,
so a method's cost there is roughly the kernels it adds per step. This bench counts them side by
side, one process, one model, the same sample and generation settings for every method:
  * everywhere: aten calls at the dispatcher + custom-kernel calls + host syncs, per decode step
    (what exactly is counted: `vh_bench.bench.launch_count`);
  * on CUDA also: the profiler's CUDA activities (kernels, memcpy, memset) per decode step, as
    (total of a T-token generation − total of a 1-token generation) / (T − 1).
Per layer = per step / decoder layers (embedding, lm_head and a method's once-per-step work are
spread over the layers). Ratios are to the baseline (vanilla).

A method entry `name+key=value` is configs/method/<name>.yaml with `method.key=value` (e.g.
`vasparse+kernel=triton`); on a CPU the Triton kernels run under `TRITON_INTERPRET=1`, which this
bench sets, so their launches are counted where no GPU is. Output: results/bench/launches.{json,md}.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vh_bench.bench.launch_count import count_generation, cuda_kernels
from vh_bench.bench.speed import compose_method, split_overrides, with_defaults
from vh_bench.config import gen_config, resolve_device
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError
from vh_bench.provenance import device_description, git_commit, library_versions
from vh_bench.report.layout import simple_markdown
from vh_bench.runner import build_dataset, build_method, load_adapter, prepare_inputs, resolve_model_path, select_samples
from vh_bench.store import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

LAUNCH_DEFAULTS = {"model": "bench", "runtime.limit": "1", "runtime.progress": "false", "generation.max_new_tokens": "64"}
DEFAULT_METHODS = (
    "vanilla", "fastv", "topk", "vcd", "vasparse+kernel=torch", "vasparse+kernel=cpu", "vasparse+kernel=triton",
)  # fmt: skip
TOP_OPS = 8  # calls listed per method where it differs most from the baseline


def parse_entry(entry: str) -> tuple[str, list[str]]:
    """`vasparse+kernel=triton+lam=0` → ("vasparse", ["method.kernel=triton", "method.lam=0"])."""
    name, *extra = entry.split("+")
    for e in extra:
        if "=" not in e:
            raise ConfigError("method", f"{entry!r}: '+{e}' is not key=value", "write e.g. vasparse+kernel=triton")
    return name.strip(), [f"method.{e.strip()}" for e in extra]


def _per_step(total: int, steps: int) -> float | None:
    return total / steps if steps else None


def count_one(
    entry: str, overrides: Sequence[str], adapter: Any, prepared: Any, device: str, dtype: str, default_new: int | None
) -> dict[str, Any]:
    name, extra = parse_entry(entry)
    cfg = compose_method(name, [*overrides, *extra])
    method = build_method(cfg)
    gen = gen_config(cfg, default_new)
    method.check(gen)
    method.check_runtime(device, getattr(torch, dtype))
    inputs, seeds = prepared
    counter, out = count_generation(method, adapter, inputs, gen, seeds)
    step, sel, pre = counter.counts["step"], counter.counts["select"], counter.counts["prefill"]
    n = step.calls
    rec: dict[str, Any] = {
        "method": name,
        "overrides": extra,
        "implementation": getattr(method, "implementation", dict)(),
        "n_new_tokens": out.n_new_tokens,
        "decode_steps": n,
        "kernels_per_step": _per_step(step.kernels, n),
        "custom_per_step": _per_step(step.custom, n),
        "launches_per_step": _per_step(step.kernels + step.custom, n),
        "launches_per_layer": None,
        "syncs_per_step": _per_step(step.syncs, n),
        "select_syncs_per_step": _per_step(sel.syncs, n),
        "select_kernels_per_step": _per_step(sel.kernels, n),
        "prefill_launches": pre.kernels + pre.custom,
        "step_ops_per_step": {k: v / n for k, v in step.ops.most_common()} if n else {},
        "step_custom_ops": dict(step.custom_ops),
        "step_sync_ops": dict(step.sync_ops),
        "select_sync_ops": dict(sel.sync_ops),
    }
    if n:
        rec["launches_per_layer"] = rec["launches_per_step"] / adapter.n_layers
    if torch.device(device).type == "cuda":
        method.generate(adapter, inputs, gen, seeds)  # warm-up: Triton compiles, cuBLAS picks
        full = cuda_kernels(method, adapter, inputs, gen, seeds)
        one = cuda_kernels(method, adapter, inputs, type(gen)(**{**gen.__dict__, "max_new_tokens": 1}), seeds)
        steps = full["n_new_tokens"] - 1
        rec["cuda"] = {"full": full, "one_token": one}
        rec["cuda_kernels_per_step"] = (full["total"] - one["total"]) / steps if steps > 0 else None
    return rec


def add_ratios(rows: dict[str, dict[str, Any]], baseline: str) -> None:
    base = rows.get(baseline)
    for rec in rows.values():
        for key in ("launches_per_step", "cuda_kernels_per_step"):
            b = base.get(key) if base else None
            v = rec.get(key)
            rec[f"{key}_ratio"] = v / b if v is not None and b else None
        if base:
            ops, bops = rec["step_ops_per_step"], base["step_ops_per_step"]
            diff = {k: ops.get(k, 0.0) - bops.get(k, 0.0) for k in set(ops) | set(bops)}
            top = sorted(diff.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:TOP_OPS]
            rec["added_ops_per_step"] = {k: round(v, 2) for k, v in top if abs(v) >= 0.005}


def _f(x: float | None, d: int = 1, prefix: str = "") -> str:
    return "–" if x is None else f"{prefix}{x:.{d}f}"


def launches_markdown(result: dict[str, Any]) -> str:
    setup, env = result["setup"], result["environment"]
    base = setup["baseline"]
    cuda = any("cuda_kernels_per_step" in r for r in result["methods"].values())
    head = ["method", "kernel path", "aten calls / step", "custom / step", "launches / step", "per layer",
            f"× {base}", "host syncs / step (step)", "host syncs / step (selection)"]  # fmt: skip
    if cuda:
        head += ["CUDA kernels / step", f"CUDA × {base}"]
    rows = []
    for entry, r in result["methods"].items():
        path = ", ".join(f"{k}={v}" for k, v in r["implementation"].items()) or "–"
        row = [
            entry, path, _f(r["kernels_per_step"]), _f(r["custom_per_step"]), _f(r["launches_per_step"]),
            _f(r["launches_per_layer"], 2), _f(r["launches_per_step_ratio"], 3, "×"), _f(r["syncs_per_step"], 2),
            _f(r["select_syncs_per_step"], 2),
        ]  # fmt: skip
        if cuda:
            row += [_f(r.get("cuda_kernels_per_step")), _f(r.get("cuda_kernels_per_step_ratio"), 3, "×")]
        rows.append(row)
    lines = [
        "# Launch-count bench",
        "",
        f"`{setup['command']}`",
        "",
        f"Model `{setup['model']}` ({setup['n_layers']} decoder layers), sample `{setup['sample_id']}`, decoding"
        f" {setup['generation']['strategy']} ≤ {setup['generation']['max_new_tokens']} new tokens, batch 1.",
        f"Device {env['device']}, {env['dtype']}, torch {env['versions'].get('torch')},"
        f" transformers {env['versions'].get('transformers')}, triton {env['versions'].get('triton', '–')}"
        + (f", TRITON_INTERPRET={env['triton_interpret']}" if env.get("triton_interpret") else "") + ".",
        "",
        simple_markdown(head, rows),
        "",
        "Per decode step (`stepper.step` + beam reorder: the model's forward and the method's work for one token),"
        " averaged over the generation's steps. aten calls: calls reaching the torch dispatcher that are not views,"
        " aliases, allocations or metadata (a composite such as `softmax` counts once). custom: fused C++ kernel or"
        " Triton launches (the dispatcher is not counted inside them). Per layer = per step / decoder layers."
        " Host syncs: host reads of device values (`item`, `bool`, `tolist`, `nonzero`, ...); 'selection' is the"
        " decoding loop's token choice, the same code for every method. See vh_bench/bench/launch_count.py.",
    ]
    if env.get("triton_launches"):
        lines += ["", env["triton_launches"] + "."]
    added = [(e, r.get("added_ops_per_step")) for e, r in result["methods"].items() if e != base and r.get("added_ops_per_step")]
    if added:
        lines += ["", f"Calls per step added (+) or removed (−) against {base}:", ""]
        for e, ops in added:
            lines.append(f"- {e}: " + ", ".join(f"{k} {v:+g}" for k, v in ops.items()))
    if result.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k} ({v})" for k, v in result["skipped"].items())]
    return "\n".join(lines)


def run_launch_bench(
    overrides: Sequence[str] = (), *, baseline: str = "vanilla", out_dir: Path | None = None, interpret_triton: bool = False
) -> dict[str, Any]:
    names, rest = split_overrides(overrides)
    ovs = with_defaults(rest, LAUNCH_DEFAULTS)
    base_cfg = compose_method(baseline, ovs)
    device, dtype = resolve_device(base_cfg.runtime)
    entries = list(names or DEFAULT_METHODS)
    if not names and torch.device(device).type != "cpu":
        entries = [e for e in entries if e != "vasparse+kernel=cpu"]
    entries = [baseline] + [e for e in dict.fromkeys(entries) if e != baseline]
    interpret = None
    triton_how = None
    if torch.device(device).type == "cpu" and any("kernel=triton" in e for e in entries):
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before any Triton kernel is defined
        interpret = os.environ["TRITON_INTERPRET"]
        triton_how = (
            "Triton kernels interpreted (TRITON_INTERPRET=1)" if interpret_triton else
            "Triton launches counted by construction: the wrapper's own torch calls at the dispatcher, one"
            " custom kernel per launch, the launch's results computed by the fused CPU kernel (the same"
            " computation; interpreting R·H programs per layer and step would take about an hour here);"
            " --interpret-triton runs the interpreter instead"
        )  # fmt: skip
    dataset = build_dataset(base_cfg)
    dataset.check()
    sample = select_samples(dataset, base_cfg.runtime.limit)[0]
    adapter = load_adapter(base_cfg, resolve_model_path(base_cfg), device, dtype)
    prepared = (prepare_inputs(adapter, sample), SampleSeeds(int(base_cfg.runtime.seed), sample.sample_id))
    rows: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    stand_in = triton_how is not None and not interpret_triton
    if stand_in:
        from methods import vasparse_fused, vasparse_triton

        vasparse_triton.use_stand_in(vasparse_fused.load())
    try:
        for entry in entries:
            try:
                rows[entry] = count_one(entry, ovs, adapter, prepared, device, dtype, getattr(dataset, "max_new_tokens", None))
            except Exception as exc:  # noqa: BLE001 - one method that cannot run must not stop the others
                skipped[entry] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                log.warning("skipping %s: %s", entry, skipped[entry])
    finally:
        if stand_in:
            vasparse_triton.use_stand_in(None)
    if baseline not in rows:
        raise ConfigError("method", f"the baseline {baseline} could not be counted: {skipped.get(baseline)}")
    add_ratios(rows, baseline)
    versions = library_versions()
    try:
        import triton

        versions.setdefault("triton", triton.__version__)
    except Exception:  # noqa: BLE001 - triton is optional
        pass
    desc = device_description(device)
    result = {
        "setup": {
            "command": " ".join(["python -m vh_bench.bench launches", *overrides] + (["--interpret-triton"] if interpret_triton else [])),
            "baseline": baseline,
            "model": str(base_cfg.model.name),
            "n_layers": adapter.n_layers,
            "sample_id": sample.sample_id,
            "generation": gen_config(base_cfg, getattr(dataset, "max_new_tokens", None)).__dict__,
            "overrides": list(ovs),
        },
        "environment": {
            "device": desc.get("gpu") or f"{device}:{desc['cpu']}",
            "dtype": dtype,
            "triton_interpret": interpret,
            "triton_launches": triton_how,
            "versions": versions,
            "git": git_commit(),
        },
        "methods": rows,
        "skipped": skipped,
    }
    out = Path(out_dir) if out_dir is not None else Path(str(base_cfg.paths.results_dir)).expanduser() / "bench"
    atomic_write_json(out / "launches.json", result)
    atomic_write_text(out / "launches.md", launches_markdown(result) + "\n")
    result["written"] = [str(out / "launches.json"), str(out / "launches.md")]
    return result
