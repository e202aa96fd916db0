"""Scoring in a worker process gives the same metrics as scoring in-process, and falls back."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import FAST, results_override
from vh_bench import scoring_worker
from vh_bench.config import compose
from vh_bench.runner import run


def test_worker_scores_like_the_dataset_itself(tmp_path: Path) -> None:
    local = run(compose([*FAST, results_override(tmp_path), "runtime.limit=3"]))
    worker = run(compose([*FAST, results_override(tmp_path), "runtime.limit=3", "runtime.scoring_worker=true"]))
    assert worker["run_dir"] == local["run_dir"]  # scoring is not part of the fingerprint
    assert worker["run"]["n_generated_now"] == 0
    assert worker["metrics"] == local["metrics"]


def test_worker_failure_falls_back_to_in_process_scoring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(dataset_cfg):
        raise RuntimeError("worker could not build the dataset")

    monkeypatch.setattr(scoring_worker, "_init", broken)
    # A function defined in a test cannot be sent to a spawned process: the submit fails, which is
    # exactly the kind of failure the fallback is for.
    res = run(compose([*FAST, results_override(tmp_path), "runtime.limit=2", "runtime.scoring_worker=true"]))
    assert res["metrics"]["chair"]["n_captions"] == 2
