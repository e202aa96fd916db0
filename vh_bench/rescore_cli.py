"""`python -m vh_bench.score run <run_dir> [--update]`: rescore a run from its directory (vh_bench.rescore)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    r = subparsers.add_parser(
        "run",
        help="rescore a run directory exactly as the run scored it (its config, sample lines and ground truth)",
        description="Rescore a vh_bench run from its directory alone and compare with its results.json. "
        "Exit status 0: metrics reproduced; 1: they differ (listed on stderr); 2: the run cannot be rescored.",
    )
    r.add_argument("run_dir", type=Path, help="a run directory (results/runs/<model>/<dataset>/<method>/<fp8>)")
    r.add_argument("--update", action="store_true",
                   help="write the rescored metrics into results.json (after a metric fix)")  # fmt: skip
    r.set_defaults(func=run_rescore)


def run_rescore(args: argparse.Namespace) -> dict[str, Any]:
    from vh_bench.rescore import rescore_run, write_back

    res = rescore_run(args.run_dir)
    if res.recorded is None:
        print(f"note: {args.run_dir} has no results.json; nothing to compare with", file=sys.stderr)
    elif res.differences:
        print(f"rescored metrics differ from results.json in {len(res.differences)} value(s):", file=sys.stderr)
        for line in res.differences[:40]:
            print(f"  {line}", file=sys.stderr)
    if args.update and res.recorded is not None:
        print(f"wrote {write_back(res)}", file=sys.stderr)
    return res.summary()
