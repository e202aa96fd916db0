"""Access to the third-party data folder (`VH_BENCH_SHARED`, default ../shared) from tests.

Missing data skips the test locally, but fails it when the environment variable `CI` is set:
on CI a silently skipped golden test would be a test that cannot fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vh_bench.paths import shared_dir


def shared_path(rel: str) -> Path:
    """`<shared>/rel`, or skip (locally) / fail (CI) the calling test when it does not exist."""
    path = shared_dir() / rel
    if not path.exists():
        msg = f"shared data {path} not found (set VH_BENCH_SHARED to the shared data folder)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path
