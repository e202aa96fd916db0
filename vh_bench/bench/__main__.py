"""`python -m vh_bench.bench {speed,launches,profile} [options] [key=value ...]`.

    python -m vh_bench.bench speed                                    # every configs/method/*.yaml, model=bench
    python -m vh_bench.bench speed method=fastv,topk,vanilla model=bench generation.max_new_tokens=32 --repeats 5
    python -m vh_bench.bench launches                                 # kernels per decode step, 64 new tokens
    python -m vh_bench.bench profile                                  # the demo run on the bench model

Hydra-style overrides compose each method's config as `python -m vh_bench` would; `method=a,b,c`
lists the methods to compare. Output: results/bench/speed.{json,md}, launches.{json,md}, profile.md.
"""

from __future__ import annotations

import time

_STARTED = time.perf_counter()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402

from vh_bench.errors import ConfigError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m vh_bench.bench", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("speed", help="tokens/s, prefill latency and peak memory of methods side by side")
    sp.add_argument("overrides", nargs="*", help="Hydra overrides; method=a,b,c selects the methods")
    sp.add_argument("--repeats", type=int, default=3, help="timed repetitions over all samples (default 3)")
    sp.add_argument("--baseline", default="vanilla", help="ratios are relative to this method (default vanilla)")
    sp.add_argument("--out-dir", type=Path, default=None, help="default: <paths.results_dir>/bench")
    sp.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass")
    sp.add_argument("--keep-denormals", action="store_true", help="do not flush denormal floats (see bench.speed)")
    lp = sub.add_parser("launches", help="kernels, custom kernels and host syncs per decode step, side by side")
    lp.add_argument("overrides", nargs="*", help="Hydra overrides; method=a,b+key=value,... selects the methods")
    lp.add_argument("--baseline", default="vanilla", help="ratios are relative to this method (default vanilla)")
    lp.add_argument("--out-dir", type=Path, default=None, help="default: <paths.results_dir>/bench")
    lp.add_argument("--interpret-triton", action="store_true", help="on a CPU, interpret the Triton kernels (slow)")
    pp = sub.add_parser("profile", help="wall-time breakdown of one run (default: demo experiment, bench model)")
    pp.add_argument("overrides", nargs="*", help="Hydra overrides of the profiled run")
    pp.add_argument("--out-dir", type=Path, default=None, help="default: <paths.results_dir>/bench")
    pp.add_argument("--cprofile", type=Path, default=None, help="also write cProfile stats here and print the top 25")
    pp.add_argument("--keep", action="store_true", help="keep the temporary run directory")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "speed":
            from vh_bench.bench.speed import run_speed_bench, speed_markdown

            result = run_speed_bench(
                args.overrides,
                repeats=args.repeats,
                baseline=args.baseline,
                out_dir=args.out_dir,
                memory=not args.no_memory,
                flush_denormal=not args.keep_denormals,
            )
            print(speed_markdown(result))
        elif args.command == "launches":
            from vh_bench.bench.launches import launches_markdown, run_launch_bench

            result = run_launch_bench(args.overrides, baseline=args.baseline, out_dir=args.out_dir, interpret_triton=args.interpret_triton)
            print(launches_markdown(result))
        else:
            from vh_bench.bench.profile import run_profile

            result = run_profile(args.overrides, out_dir=args.out_dir, cprofile=args.cprofile, keep=args.keep, started=_STARTED)
            print(result["markdown"])
    except ConfigError as exc:
        print(f"vh_bench.bench: error: {exc}", file=sys.stderr)
        return 2
    for path in result["written"]:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
