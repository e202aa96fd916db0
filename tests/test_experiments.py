"""Every runnable experiment preset end to end on the tiny model, as a multirun (the README's
`make demo` command included). `vasparse_paper` needs COCO images: it is composed in test_config
and its rows are checked in tests/methods/test_vasparse.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import results_override, run_cli

SMALL = ("runtime.limit=2", "generation.max_new_tokens=3", "runtime.progress=false", "runtime.num_threads=1", "model.tiny.image_size=224")


def _results(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.glob("runs/**/results.json"))]


@pytest.mark.slow
def test_demo_experiment_runs_every_method_on_both_demo_datasets(tmp_path: Path) -> None:
    proc = run_cli(["-m", "experiment=demo_tiny", *SMALL, results_override(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path)
    got = sorted((r["method_label"], r["dataset"]) for r in results)
    methods = ["fastv", "halc", "topk", "vanilla", "vasparse", "vcd"]
    assert got == sorted((m, d) for m in methods for d in ("demo", "demo_pope"))
    assert all(r["complete"] and r["n_errors"] == 0 for r in results)
    assert all("chair" in r["metrics"] for r in results if r["dataset"] == "demo")
    assert all("f1" in r["metrics"] for r in results if r["dataset"] == "demo_pope")
    demo_dir = tmp_path / "demo_tiny"
    assert {"table1_chair.md", "table2_pope.md", "chair_vs_speed.png", "chair_vs_speed.pdf"} <= {p.name for p in demo_dir.iterdir()}


@pytest.mark.slow
def test_vasparse_ablation_experiment_writes_one_row_per_ablation(tmp_path: Path) -> None:
    proc = run_cli(["-m", "experiment=vasparse_ablation", "model=tiny", "dataset=demo", *SMALL, results_override(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path)
    assert len(results) == 6 and len({r["fingerprint"] for r in results}) >= 5  # w/o Sᵐ may equal full
    assert {r["method"] for r in results} == {"vasparse"}
    # `method.kernel=auto` on a CPU in float32: the fused kernel ran, and results.json says so
    assert {r["implementation"]["vasparse_kernel"] for r in results} == {"cpu"}


@pytest.mark.slow
def test_demo_experiment_runs_on_the_scenes_model(tmp_path: Path) -> None:
    """`make demo`'s experiment: the trained scenes model on probe captions and scenes POPE; two of
    its eleven method rows here (the sweep's `method` list is overridden on the command line)."""
    proc = run_cli(["-m", "experiment=demo", "method=vanilla,vasparse_no_sap", "runtime.limit=2",
                    "runtime.progress=false", results_override(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path)
    got = sorted((r["method_label"], r["dataset"], r["model"]) for r in results)
    assert got == sorted((m, d, "scenes") for m in ("vanilla", "vasparse w/o SAP") for d in ("scenes_probe", "scenes_pope"))
    assert all(r["complete"] and r["n_errors"] == 0 for r in results)
    assert {"table1_chair.md", "table2_pope.md"} <= {p.name for p in (tmp_path / "demo").iterdir()}
