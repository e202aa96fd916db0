"""The prepared GPU check (`scripts/gpu_check.sh` runs it): identity, speed and launches on one GPU.

    python -m vh_bench.bench.gpu_check --out DIR [--model llava-1.5-7b-shape] [--cpu-smoke] [--budget-s 420]

Stages, each recorded with its wall time, in one JSON (`gpu_check.json`) and one markdown table
(`gpu_check.md`) under `--out`; a stage that fails is recorded with its one-line reason and the
others still run; stages that would start past the time budget are recorded as skipped:
  1. environment: versions, device, CUDA; without CUDA (and without --cpu-smoke) it stops here;
  2. identity: every method with its knobs zeroed (IDENTITY) against vanilla, token by token, greedy;
     where tokens differ, the step and vanilla's top-2 margin there (a random model in float16 has
     near-ties, and the paths round differently: a difference at a margin below ~1e-2 is rounding);
  3. `bench launches` (kernels per decode step, CUDA profiler counts);
  4. `bench speed`, greedy and beam 3, every method (64 new tokens).
`--cpu-smoke` runs the same code on `model=tiny` on the CPU with few tokens, so the script's path is
tested where no GPU is (tests/bench/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vh_bench.report.layout import simple_markdown

log = logging.getLogger(__name__)

METHODS = ("vanilla", "fastv", "topk", "vcd", "vasparse+kernel=torch", "vasparse+kernel=triton")
# Overrides that make each method vanilla's decoding (methods.md: every knob at its identity value).
IDENTITY: dict[str, list[str]] = {
    "fastv": ["method.ratio=0"],
    "topk": ["method.keep_ratio=1.0"],
    "vcd": ["method.alpha=0", "method.beta=0"],
    "vasparse": ["method.lam=0", "method.alpha=0", "method.beta=0", "method.sparsity=1", "method.svcd.plausibility=0"],
}


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    env["torch_cuda"] = torch.version.cuda
    for name in ("transformers", "triton", "hydra", "omegaconf", "nltk", "pycocotools", "safetensors", "pandas"):
        try:
            mod = __import__(name)
            env[name] = getattr(mod, "__version__", "present")
        except Exception as exc:  # noqa: BLE001 - reported, the check decides what it needs
            env[name] = f"missing ({_one_line(exc)})"
    if env["cuda_available"]:
        props = torch.cuda.get_device_properties(0)
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["gpu_capability"] = f"{props.major}.{props.minor}"
    return env


def _margin(z: Any) -> float:
    top = z.float().topk(2).values
    return float(top[0] - top[1])


def identity_check(overrides: Sequence[str], methods: Sequence[str]) -> dict[str, Any]:
    """Vanilla's greedy tokens against every method with its knobs zeroed, one model load."""
    import torch

    from vh_bench.bench.launches import parse_entry
    from vh_bench.bench.speed import compose_method
    from vh_bench.config import gen_config, resolve_device
    from vh_bench.decoding.seeding import SampleSeeds
    from vh_bench.runner import build_dataset, build_method, load_adapter, prepare_inputs, resolve_model_path, select_samples

    base = compose_method("vanilla", overrides)
    device, dtype = resolve_device(base.runtime)
    dataset = build_dataset(base)
    sample = select_samples(dataset, base.runtime.limit)[0]
    adapter = load_adapter(base, resolve_model_path(base), device, dtype)
    inputs = prepare_inputs(adapter, sample)
    seeds = SampleSeeds(int(base.runtime.seed), sample.sample_id)
    gen = gen_config(base, getattr(dataset, "max_new_tokens", None))
    ref = build_method(base).generate(adapter, inputs, gen, seeds).token_ids
    out: dict[str, Any] = {"sample_id": sample.sample_id, "n_tokens": len(ref), "methods": {}}
    for entry in methods:
        if entry == "vanilla":
            continue
        name, extra = parse_entry(entry)
        try:
            cfg = compose_method(name, [*overrides, *extra, *IDENTITY.get(name, [])])
            method = build_method(cfg)
            method.check(gen)
            method.check_runtime(device, getattr(torch, dtype))
            got = method.generate(adapter, inputs, gen, seeds).token_ids
            rec: dict[str, Any] = {"equal": got == ref, "implementation": getattr(method, "implementation", dict)()}
            if got != ref:
                step = next((i for i, (a, b) in enumerate(zip(got, ref)) if a != b), min(len(got), len(ref)))
                rec["first_difference"] = step
                rec["vanilla_margin_there"] = _vanilla_margin(adapter, inputs, ref, step)
            out["methods"][entry] = rec
        except Exception as exc:  # noqa: BLE001 - one method failing must not hide the others
            out["methods"][entry] = {"error": _one_line(exc)}
    return out


def _vanilla_margin(adapter: Any, inputs: Any, ref: list[int], step: int) -> float | None:
    """Vanilla's top-2 score margin for token `step` (replaying its first `step` tokens)."""
    import torch

    from vh_bench.decoding.branch import Branch

    try:
        with torch.inference_mode():
            branch = Branch(adapter, inputs)
            z = branch.prefill()
            for tok in ref[:step]:
                z = branch.step(torch.tensor([tok], dtype=torch.long, device=adapter.device))
            return _margin(z[0])
    except Exception:  # noqa: BLE001 - a diagnostic only
        log.exception("margin replay failed")
        return None


def run_stage(stages: dict[str, Any], name: str, fn: Callable[[], Any], deadline: float) -> Any:
    if time.monotonic() > deadline:
        stages[name] = {"status": "skipped", "reason": "time budget spent"}
        print(f"gpu_check: {name}: skipped (time budget spent)", file=sys.stderr)
        return None
    t0 = time.monotonic()
    print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
    try:
        result = fn()
        stages[name] = {"status": "ok", "wall_s": round(time.monotonic() - t0, 1), "result": result}
        print(f"gpu_check: {name}: ok ({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
        return result
    except Exception as exc:  # noqa: BLE001 - recorded; the remaining stages still run
        stages[name] = {"status": "failed", "wall_s": round(time.monotonic() - t0, 1), "reason": _one_line(exc),
                        "traceback": traceback.format_exc(limit=8)}  # fmt: skip
        print(f"gpu_check: {name}: FAILED: {_one_line(exc)}", file=sys.stderr, flush=True)
        return None


def _slim(result: dict[str, Any] | None) -> dict[str, Any] | None:
    if result is None:
        return None
    return {k: v for k, v in result.items() if k not in ("order", "written")}


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        "# GPU check",
        "",
        f"{report['date']} · {env.get('gpu', 'no GPU')} · model `{report['model']}` ({' '.join(report['model_overrides'])})"
        f" · torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), transformers {env.get('transformers')}, triton {env.get('triton')}",
        "",
        simple_markdown(["stage", "status", "wall s", "note"],
                        [[k, v["status"], v.get("wall_s", "–"), v.get("reason", "")] for k, v in report["stages"].items()]),
    ]  # fmt: skip
    ident = report["stages"].get("identity", {}).get("result")
    if ident:
        rows = []
        for entry, r in ident["methods"].items():
            if "error" in r:
                rows.append([entry, "error", r["error"]])
            else:
                note = "" if r["equal"] else f"first difference at token {r['first_difference']}, vanilla margin {r.get('vanilla_margin_there')}"
                rows.append([entry, "equal" if r["equal"] else "differs", note])
        lines += ["", f"Identity (knobs zeroed, greedy, {ident['n_tokens']} tokens of `{ident['sample_id']}`):", "",
                  simple_markdown(["method", "tokens vs vanilla", "note"], rows)]  # fmt: skip
    launches = report["stages"].get("launches", {}).get("result")
    if launches:
        from vh_bench.bench.launches import launches_markdown

        lines += ["", launches_markdown(launches).replace("# Launch-count bench", "## Launches")]
    for key in ("speed_greedy", "speed_beam"):
        sp = report["stages"].get(key, {}).get("result")
        if sp:
            from vh_bench.bench.speed import speed_markdown

            lines += ["", speed_markdown(sp).replace("# Speed bench", f"## Speed ({key.split('_')[1]})")]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vh_bench.bench.gpu_check", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu_check.{json,md} and the bench tables")
    ap.add_argument("--model", default="llava-1.5-7b-shape", help="configs/model/<name>.yaml (default llava-1.5-7b-shape)")
    ap.add_argument("--model-override", action="append", default=None,
                    help="model/runtime overrides (default: model.tiny.text_layers=32 runtime.dtype=float16)")  # fmt: skip
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=1, help="speed-bench samples (runtime.limit)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="no stage starts after this many seconds")
    ap.add_argument("--cpu-smoke", action="store_true", help="model=tiny on the CPU, few tokens: test the script's path")
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated bench entries (default: all)")
    args = ap.parse_args(argv)
    if args.cpu_smoke:  # the Triton kernels run interpreted; triton reads this when first imported
        os.environ.setdefault("TRITON_INTERPRET", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    t_start = time.monotonic()
    deadline = t_start + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment()
    print("gpu_check: " + ", ".join(f"{k} {v}" for k, v in env.items()), file=sys.stderr, flush=True)
    if args.cpu_smoke:
        model, model_ovs = "tiny", ["runtime.device=cpu", "runtime.dtype=float32"]
    else:
        if not env["cuda_available"]:
            print("gpu_check: FAILED: torch sees no CUDA device (torch.cuda.is_available() is False)", file=sys.stderr)
            return 2
        model = args.model
        model_ovs = args.model_override if args.model_override is not None else ["model.tiny.text_layers=32", "runtime.dtype=float16"]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if "vanilla" not in methods:
        methods.insert(0, "vanilla")
    base = [f"model={model}", *model_ovs, "runtime.progress=false", f"runtime.limit={args.samples}",
            f"generation.max_new_tokens={args.new_tokens}"]  # fmt: skip
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": model,
        "model_overrides": model_ovs,
        "cpu_smoke": args.cpu_smoke,
        "environment": env,
        "stages": {},
    }
    stages = report["stages"]

    def write() -> None:
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
        (args.out / "gpu_check.md").write_text(markdown(report) + "\n")

    from vh_bench.bench.launches import run_launch_bench
    from vh_bench.bench.speed import run_speed_bench

    method_list = "method=" + ",".join(methods)
    run_stage(stages, "identity", lambda: identity_check(base, methods), deadline)
    write()
    run_stage(stages, "launches", lambda: _slim(run_launch_bench([method_list, *base], out_dir=args.out / "launches")), deadline)
    write()
    speed_names = "method=" + ",".join(dict.fromkeys(m.split("+")[0] for m in methods))
    for key, gen in (("speed_greedy", []), ("speed_beam", ["generation=beam"])):
        run_stage(
            stages, key,
            lambda gen=gen, key=key: _slim(run_speed_bench([speed_names, *base, *gen], repeats=args.repeats,
                                                           out_dir=args.out / key, memory=False, progress=False)),
            deadline,
        )  # fmt: skip
        write()
    report["wall_s"] = round(time.monotonic() - t_start, 1)
    write()
    failed = [k for k, v in stages.items() if v["status"] == "failed"]
    print(f"gpu_check: wrote {args.out / 'gpu_check.json'} and gpu_check.md ({report['wall_s']:.0f} s)", file=sys.stderr)
    if failed:
        print(f"gpu_check: FAILED stages: {', '.join(failed)} (reasons in gpu_check.md)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
