"""Where things are: the project root, the config directory, the shared third-party data folder.

The config directory is found, not assumed (design.md): `$VH_BENCH_CONFIG_DIR`, else the source
checkout's `configs/`, else the copy packaged in the wheel as `vh_bench/configs`.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def project_root() -> Path:
    """The source checkout holding this package (parent of `vh_bench/`)."""
    return PACKAGE_DIR.parent


def config_dir() -> Path:
    env = os.environ.get("VH_BENCH_CONFIG_DIR")
    candidates = [Path(env)] if env else []
    candidates += [project_root() / "configs", PACKAGE_DIR / "configs"]
    for cand in candidates:
        if (cand / "config.yaml").is_file():
            return cand.resolve()
    raise FileNotFoundError(
        "vh_bench config directory not found (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "); set VH_BENCH_CONFIG_DIR to the folder holding config.yaml"
    )


def shared_dir() -> Path:
    """The third-party data folder: `$VH_BENCH_SHARED`, default `../shared` next to the checkout."""
    env = os.environ.get("VH_BENCH_SHARED")
    return Path(env).resolve() if env else (project_root().parent / "shared").resolve()


def cache_dir() -> Path:
    """Project-local cache (built tiny models, demo data, NLTK data root, GT caches); git-ignored."""
    env = os.environ.get("VH_BENCH_CACHE")
    return Path(env).resolve() if env else project_root() / ".cache"
