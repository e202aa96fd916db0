"""`python -m vh_bench.show <run_dir or runs folder>... [--out PAGE.html] [--text]`.

Writes one self-contained HTML page: per image the picture, the prompt, each method's caption with
CHAIR's words marked (hallucinated / correct / ground truth missed) and POPE answers judged right or
wrong, with filters (only captions with hallucinations; one method against another). `--text`
prints the same to the terminal instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vh_bench.show", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run directories, or folders holding them (e.g. results/runs)")
    ap.add_argument("--out", type=Path, default=None, help="the HTML page to write (default: <first input>/show.html)")
    ap.add_argument("--text", action="store_true", help="print the text form instead of writing the page")
    ap.add_argument("--only-hallucinated", action="store_true", help="text form: only captions with a hallucination")
    ap.add_argument("--methods", nargs="+", default=(), metavar="METHOD", help="text form: only these methods (labels as shown)")
    args = ap.parse_args(argv)

    from vh_bench.rescore import RescoreError
    from vh_bench.show.page import render_html, render_text
    from vh_bench.show.views import gather
    from vh_bench.store import atomic_write_text

    try:
        browse = gather(args.runs)
    except (FileNotFoundError, RescoreError, ValueError) as exc:
        print(f"vh_bench.show: error: {exc}", file=sys.stderr)
        return 2
    if args.text:
        print(render_text(browse, colour=sys.stdout.isatty(), only_hallucinated=args.only_hallucinated,
                          methods=tuple(args.methods)))  # fmt: skip
        return 0
    first = args.runs[0]
    out = args.out or ((first if first.is_dir() else first.parent) / "show.html")
    atomic_write_text(out, render_html(browse))
    print(f"wrote {out} ({len(browse.images)} images, {len(browse.runs)} runs)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
