"""Helpers for tests that run the harness end to end on the tiny model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from vh_bench.paths import project_root

# The 224-px tiny model (same weights as the conftest fixtures) and few tokens keep runs short.
FAST = (
    "model.tiny.image_size=224",
    "dataset=demo",
    "runtime.device=cpu",
    "runtime.dtype=float32",
    "runtime.progress=false",
    "generation.max_new_tokens=6",
    "runtime.num_threads=1",
    # In-process scoring: one NLTK load per pytest process instead of a worker per run
    # (the worker itself is tested in test_scoring_worker.py).
    "runtime.scoring_worker=false",
)


def run_cli(args: list[str], *, module: str = "vh_bench", timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def results_override(tmp: Path) -> str:
    return f"paths.results_dir={tmp}"
