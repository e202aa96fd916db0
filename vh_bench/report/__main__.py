"""`python -m vh_bench.report <results dir> [--format md|csv|latex] [--table ...] [--baseline vanilla]`.

Prints the paper-layout tables (Table 1: CHAIR + tokens/s; Table 2: POPE/OPOPE F1) of every
results.json under the directory; `--table runs` prints one row per run instead. `--out FILE`
also writes the printed text; `--out-dir DIR` writes every table in every format plus the
CHAIR-vs-speed plot (PNG and PDF).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vh_bench.report.build import build_report, write_report
from vh_bench.report.layout import FORMATS
from vh_bench.report.plot import PLOT_METRICS
from vh_bench.report.records import find_results, load_results
from vh_bench.store import atomic_write_text

TABLE_CHOICES = ("paper", "chair", "pope", "paired", "runs", "all")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vh_bench.report", description=__doc__.splitlines()[0])
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("--format", choices=FORMATS, default="md")
    ap.add_argument(
        "--table",
        choices=TABLE_CHOICES,
        default="paper",
        help="paper: Table 1 and/or Table 2, whichever has runs (default); all: those and the runs table",
    )
    ap.add_argument("--baseline", default=None, metavar="METHOD", help="add tokens/s ratio columns relative to this method (e.g. vanilla)")
    ap.add_argument("--out", type=Path, default=None, help="also write the printed tables to this file")
    ap.add_argument("--out-dir", type=Path, default=None, help="write all tables (md, csv, tex) and the plot here")
    ap.add_argument("--plot-metric", choices=PLOT_METRICS, default="CHAIR_S",
                    help="kept for compatibility: the plot now has a CHAIR_S and a CHAIR_I panel")
    ap.add_argument("--allow-mixed", action="store_true",
                    help="put runs over different sample sets or max_new_tokens in one column (marked ‡) instead of refusing")
    args = ap.parse_args(argv)
    if not args.results_dir.exists():
        print(f"error: {args.results_dir} does not exist", file=sys.stderr)
        return 2
    paths = find_results(args.results_dir)
    if not paths:
        print(f"error: no results.json under {args.results_dir}", file=sys.stderr)
        return 2
    try:
        report = build_report(load_results(paths), baseline=args.baseline, allow_mixed=args.allow_mixed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.table == "paper":
        which = report.paper_tables()
    elif args.table == "all":
        which = report.paper_tables() + (["runs"] if "runs" not in report.paper_tables() else [])
    elif args.table == "paired":
        which = ["paired"]
    else:
        which = [args.table]
    text = "\n\n".join(report.render(w, args.format) for w in which)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    if args.out_dir:
        for p in write_report(report, args.out_dir, plot_metric=args.plot_metric):
            print(f"wrote {p}", file=sys.stderr)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
