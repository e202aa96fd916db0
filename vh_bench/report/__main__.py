"""`python -m vh_bench.report <results dir> [--format md|csv|latex] [--out FILE]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vh_bench.report.table import FORMATS, find_results, format_table, load_results, results_frame
from vh_bench.store import atomic_write_text


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vh_bench.report", description="Collect results.json files into one table.")
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--format", choices=FORMATS, default="md")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    if not args.results_dir.exists():
        print(f"error: {args.results_dir} does not exist", file=sys.stderr)
        return 2
    paths = find_results(args.results_dir)
    if not paths:
        print(f"error: no results.json under {args.results_dir}", file=sys.stderr)
        return 2
    table = format_table(results_frame(load_results(paths)), args.format)
    if args.out:
        atomic_write_text(args.out, table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
