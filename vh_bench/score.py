"""Rescoring CLI: `python -m vh_bench.score {run,chair,pope,opope} ...`.

Scoring is separate from generation (design.md): any caption/answer file, ours or a reference
implementation's, can be scored again without touching a GPU; `run <run_dir>` rescores a run
from its directory alone and checks the result against its results.json. Each subcommand prints its overall
metrics as one JSON object on the last line of stdout (fractions, not percentages).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from vh_bench import rescore_cli
    from vh_bench.metrics import chair_cli, pope_cli

    parser = argparse.ArgumentParser(prog="python -m vh_bench.score", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="metric", required=True)
    rescore_cli.register(sub)
    chair_cli.register(sub)
    pope_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        summary = args.func(args)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, sort_keys=True))
    # `run`: 1 when the rescored metrics differ from the run's results.json
    return 1 if summary.get("reproduced") is False else 0


if __name__ == "__main__":
    raise SystemExit(main())
