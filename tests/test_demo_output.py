"""`make demo` writes where git does not look; the committed reference tables live apart."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from vh_bench.config import compose
from vh_bench.paths import project_root


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True)


def test_demo_tables_go_to_an_ignored_folder_and_the_reference_is_tracked() -> None:
    if _git("rev-parse", "--is-inside-work-tree").returncode != 0:
        pytest.skip("not a git checkout")
    cfg = compose(["experiment=demo"], return_hydra_config=True)
    out_dir = Path(str(cfg.hydra.callbacks.report.out_dir)).resolve()
    assert out_dir.is_relative_to(project_root())
    rel = out_dir.relative_to(project_root())
    # Every file the demo's report writes (vh_bench.report.build) must be ignored ...
    names = [f"{t}.{ext}" for t in ("table1_chair", "table2_pope", "runs") for ext in ("md", "csv", "tex")]
    names += ["chair_vs_speed.png", "chair_vs_speed.pdf"]
    ignored = _git("check-ignore", *[str(rel / n) for n in names]).stdout.split()
    assert sorted(ignored) == sorted(str(rel / n) for n in names)
    # ... and the run directories too; the reference tables are committed files.
    assert _git("check-ignore", "-q", "results/runs/tiny/demo/vanilla/0/results.json").returncode == 0
    tracked = _git("ls-files", "results/reference").stdout.split()
    assert "results/reference/table1_chair.md" in tracked and "results/reference/chair_vs_speed.png" in tracked
    assert not _git("ls-files", str(rel)).stdout.strip()
