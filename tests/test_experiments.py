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


def test_vcd_paper_preset_composes_the_papers_settings() -> None:
    from vh_bench.config import compose
    from vh_bench.runner import build_method

    cfg = compose(["experiment=vcd_paper"])
    g = cfg.generation
    assert (g.strategy, g.temperature, g.top_k, g.top_p) == ("sample", 1.0, 0, 1.0)  # methods.md §3.4
    assert cfg.model.prompt_template == "llava_v1" and cfg.dataset.name == "pope"
    assert cfg.dataset.question_suffix == "vcd"
    vcd = build_method(cfg)
    assert (vcd.name, vcd.alpha, vcd.beta, vcd.noise_step) == ("vcd", 1.0, 0.1, 500)
    assert build_method(compose(["experiment=vcd_paper", "paper_row=vcd_regular"])).name == "vanilla"
    sweep = compose(["experiment=vcd_paper"], return_hydra_config=True).hydra.sweeper.params
    assert sweep.paper_row == "vcd_regular,vcd_contrast" and sweep["dataset.split"] == "random,popular,adversarial"


def test_halc_paper_preset_composes_the_papers_settings() -> None:
    from vh_bench.config import compose
    from vh_bench.runner import build_method

    cfg = compose(["experiment=halc_paper"])
    assert (cfg.generation.strategy, cfg.generation.max_new_tokens) == ("greedy", 64)
    assert cfg.model.prompt_template == "halc" and cfg.dataset.name == "coco"
    m = build_method(cfg)
    assert (m.detector, m.box_threshold, m.num_fov, m.expand_ratio) == ("grounding_dino", 0.45, 4, 0.6)
    assert (m.num_pairs, m.contrast_weight, m.beam_size, m.skip_rate) == (2, 0.05, 1, 0.0)
    assert (m.dola.premature_layers, m.dola.relative_top, m.dola.after_replace) == ("even", 0.1, "reuse")
    assert m.scorer == "blip_itm" and "substitute" in m.implementation()["halc_scorer"]


@pytest.mark.slow
def test_vcd_paper_experiment_runs_both_rows(tmp_path: Path) -> None:
    # POPE on COCO needs COCO images: the demo POPE questions stand in; one split keeps it short.
    proc = run_cli(["-m", "experiment=vcd_paper", "dataset=demo_pope", "dataset.split=random", *SMALL,
                    results_override(tmp_path)])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = _results(tmp_path)
    assert sorted(r["method_label"] for r in results) == ["vanilla", "vcd"]
    assert all(r["complete"] and r["n_errors"] == 0 and "f1" in r["metrics"] for r in results)


@pytest.mark.slow
def test_halc_paper_experiment_runs(tmp_path: Path) -> None:
    proc = run_cli(["experiment=halc_paper", "dataset=demo", "method.detector_checkpoint=random:tiny",
                    "method.scorer_checkpoint=random:tiny", *SMALL, results_override(tmp_path)])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = _results(tmp_path)
    assert r["method_label"] == "halc" and r["complete"] and r["n_errors"] == 0 and "chair" in r["metrics"]
    assert "substitute" in r["implementation"]["halc_scorer"]
