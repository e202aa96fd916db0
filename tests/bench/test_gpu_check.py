"""scripts/gpu_check.sh must work the first time on a machine nobody has seen: its failures are one
line, and its whole path (versions, packages, identity, launches, speed) runs here with --cpu-smoke."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def run_script(*args: str, python: str = sys.executable, timeout: int = 1200) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT)


def test_no_python_is_one_line(tmp_path):
    res = run_script("--out", str(tmp_path), python="/nonexistent/python3")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == ["gpu_check: FAILED: no /nonexistent/python3 on PATH (set PYTHON=/path/to/python3)"]


def test_no_cuda_is_one_line_after_the_versions(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run_script("--out", str(tmp_path))
    assert res.returncode == 1
    assert res.stdout.startswith(f"gpu_check: python {'.'.join(map(str, sys.version_info[:3]))}, torch {torch.__version__}")
    assert res.stderr.strip().splitlines()[-1].startswith("gpu_check: FAILED: torch sees no CUDA device")


def test_unknown_argument_is_one_line(tmp_path):
    res = run_script("--frobnicate")
    assert res.returncode == 1 and res.stderr.strip().startswith("gpu_check: FAILED: unknown argument --frobnicate")


@pytest.mark.slow
def test_cpu_smoke_runs_every_stage(tmp_path):
    res = run_script("--cpu-smoke", "--out", str(tmp_path), "--",
                     "--new-tokens", "3", "--repeats", "1", "--methods", "vanilla,vasparse+kernel=triton")  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {k: v["status"] for k, v in report["stages"].items()} == {
        "identity": "ok", "launches": "ok", "speed_greedy": "ok", "speed_beam": "ok"
    }  # fmt: skip
    ident = report["stages"]["identity"]["result"]["methods"]["vasparse+kernel=triton"]
    assert ident == {"equal": True, "implementation": {"vasparse_kernel": "triton"}}  # knobs zeroed → vanilla's tokens
    tri = report["stages"]["launches"]["result"]["methods"]["vasparse+kernel=triton"]
    assert tri["custom_per_step"] == 4  # one Triton launch per layer of the 4-layer tiny model
    assert report["stages"]["speed_beam"]["result"]["setup"]["generation"]["num_beams"] == 3
    assert "| vasparse+kernel=triton |" in (tmp_path / "gpu_check.md").read_text()
