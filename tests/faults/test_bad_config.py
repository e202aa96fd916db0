"""Bad config values: each is one line naming its key, raised by `plan` before any model loads.

The cases that tests/test_runner.py and tests/test_config.py already hold (negative token counts,
zero beams, top_p=0, limit=0, flash attention, float64, unknown keys) are not repeated here; these
are the ones that used to end in a traceback, in silent acceptance, or in a directory outside
`paths.results_dir`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.faults.conftest import assert_one_line, quick_cfg
from vh_bench.errors import ConfigError
from vh_bench.runner import plan, run

GENERATION = [
    (["generation.max_new_tokens=2.5"], "generation.max_new_tokens", "must be an integer, got 2.5"),
    (["generation.max_new_tokens=abc"], "generation.max_new_tokens", "must be an integer, got 'abc'"),
    (["generation.max_new_tokens=true"], "generation.max_new_tokens", "must be an integer, got True"),
    (["generation.max_new_tokens=null"], "generation.max_new_tokens", "must be an integer, got None"),
    (["generation.max_new_tokens=0"], "generation.max_new_tokens", "must be >= 1, got 0"),
    (["generation.temperature=nan"], "generation.temperature", "must be a finite number, got nan"),
    (["generation.temperature=inf"], "generation.temperature", "must be a finite number, got inf"),
    (["generation.temperature=abc"], "generation.temperature", "must be a finite number, got 'abc'"),
    (["generation.temperature=0"], "generation.temperature", "must be > 0, got 0"),
    (["generation.temperature=-1.5"], "generation.temperature", "must be > 0, got -1.5"),
    (["generation.top_p=1.5"], "generation.top_p", "must be in (0, 1], got 1.5"),
    (["generation.top_p=nan"], "generation.top_p", "must be a finite number, got nan"),
    (["generation.top_p=abc"], "generation.top_p", "must be a finite number, got 'abc'"),
    (["generation.top_k=-1"], "generation.top_k", "must be >= 0 (0 disables), got -1"),
    (["generation.top_k=2.5"], "generation.top_k", "must be an integer, got 2.5"),
    (["generation.top_k=abc"], "generation.top_k", "must be an integer, got 'abc'"),
    (["generation=beam", "generation.num_beams=abc"], "generation.num_beams", "must be an integer, got 'abc'"),
    (["generation=beam", "generation.num_beams=2.5"], "generation.num_beams", "must be an integer, got 2.5"),
    (["generation.num_beams=3"], "generation.num_beams", "3 beams need generation.strategy=beam"),
    (["generation.length_penalty=nan"], "generation.length_penalty", "must be a finite number, got nan"),
    (["generation.length_penalty=abc"], "generation.length_penalty", "must be a finite number, got 'abc'"),
    (["generation.early_stopping=abc"], "generation.early_stopping", "must be true or false, got 'abc'"),
    (["generation.strategy=bogus"], "generation.strategy", "'bogus' is not greedy, beam or sample"),
    (["+generation.bogus=1"], "generation", "unknown key"),
]

RUNTIME = [
    (["runtime.limit=abc"], "runtime.limit", "must be an integer >= 1 or null, got 'abc'"),
    (["runtime.limit=2.5"], "runtime.limit", "must be an integer >= 1 or null, got 2.5"),
    (["runtime.limit=-3"], "runtime.limit", "must be an integer >= 1 or null, got -3"),
    (["runtime.limit=true"], "runtime.limit", "must be an integer >= 1 or null, got True"),
    (["runtime.seed=abc"], "runtime.seed", "must be an integer, got 'abc'"),
    (["runtime.seed=1.5"], "runtime.seed", "must be an integer, got 1.5"),
    (["runtime.warmup_samples=abc"], "runtime.warmup_samples", "must be an integer >= 0, got 'abc'"),
    (["runtime.warmup_samples=-1"], "runtime.warmup_samples", "must be an integer >= 0, got -1"),
    (["runtime.warmup_samples=0.5"], "runtime.warmup_samples", "must be an integer >= 0, got 0.5"),
    (["runtime.shard.index=abc"], "runtime.shard.index", "must be an integer >= 0 or null, got 'abc'"),
    (["runtime.shard.index=-1"], "runtime.shard.index", "must be an integer >= 0 or null, got -1"),
    (["runtime.shard.index=2", "runtime.shard.count=2"], "runtime.shard", "index 2 / count 2 out of range"),
    (["runtime.shard.count=0"], "runtime.shard.count", "must be an integer >= 1 or null, got 0"),
    (["runtime.shard.count=abc"], "runtime.shard.count", "must be an integer >= 1 or null, got 'abc'"),
    (["runtime.num_threads=-1"], "runtime.num_threads", "must be an integer >= 1 or null, got -1"),
    (["runtime.num_threads=0"], "runtime.num_threads", "must be an integer >= 1 or null, got 0"),
    (["runtime.num_threads=abc"], "runtime.num_threads", "must be an integer >= 1 or null, got 'abc'"),
    (["runtime.device=tpu"], "runtime.device", "'tpu' is not a device"),
    (["runtime.device=cuda:abc"], "runtime.device", "'cuda:abc' is not a device"),
    (["runtime.device=''"], "runtime.device", "'' is not a device"),
    (["runtime.dtype=abc"], "runtime.dtype", "'abc' is not one of"),
    (["runtime.on_oom=ignore"], "runtime.on_oom", "'ignore' is not skip or raise"),
    (["runtime.progress=abc"], "runtime.progress", "must be true or false, got 'abc'"),
    (["runtime.scoring_worker=abc"], "runtime.scoring_worker", "must be true or false, got 'abc'"),
]

NAMES = [
    ([f"model.name={name}"], "model.name", "cannot name a run directory")
    for name in ("/tmp/vh_bench_escape", "../../escape", "a/b", "..", ".hidden", "''", "'~'", "'my model'")
] + [
    ([f"dataset.name={name}"], "dataset.name", "cannot name a run directory")
    for name in ("../escape", "/tmp/vh_bench_escape", "a/b", "..")
]

METHODS = [
    (["method=vcd", "method.alpha=abc"], "method.alpha", "must be a number >= 0, got 'abc'"),
    (["method=vcd", "method.alpha=nan"], "method.alpha", "must be a number >= 0, got nan"),
    (["method=vcd", "method.alpha=-1"], "method.alpha", "must be a number >= 0, got -1"),
    (["method=vcd", "method.beta=2"], "method.beta", "must be in [0, 1]"),
    (["method=vcd", "method.beta=abc"], "method.beta", "must be in [0, 1]"),
    (["method=vcd", "method.noise_step=1000"], "method.noise_step", "must be an integer in [0, 999], got 1000"),
    (["method=vcd", "method.noise_step=2.5"], "method.noise_step", "must be an integer in [0, 999], got 2.5"),
    (["method=vcd", "method.batched=abc"], "method.batched", "must be true or false, got 'abc'"),
    (["method=fastv", "method.k=0"], "method.k", "must be an integer >= 1, got 0"),
    (["method=fastv", "method.k=abc"], "method.k", "must be an integer >= 1, got 'abc'"),
    (["method=fastv", "method.ratio=1"], "method.ratio", "must be in [0, 1), got 1"),
    (["method=fastv", "method.ratio=abc"], "method.ratio", "must be in [0, 1), got 'abc'"),
    (["method=fastv", "method.ratio=nan"], "method.ratio", "must be in [0, 1), got nan"),
    (["method=fastv", "method.mode=bogus"], "method.mode", "'bogus' is not one of"),
    (["method=topk", "method.keep_ratio=0"], "method.keep_ratio", "must be in (0, 1], got 0"),
    (["method=topk", "method.keep_ratio=abc"], "method.keep_ratio", "must be in (0, 1], got 'abc'"),
    (["method=topk", "method.layer=abc"], "method.layer", "must be an integer layer index, got 'abc'"),
    (["method=vasparse", "method.lam=abc"], "method.lam", "must be a number >= 0, got 'abc'"),
    (["method=vasparse", "method.sparsity=0"], "method.sparsity", "must be in (0, 1]"),
    (["method=vasparse", "method.vats.knn_k=0"], "method.vats.knn_k", "must be an integer >= 1, got 0"),
    (["method=halc_tiny", "method.beam_size=abc"], "method.beam_size", "must be an integer >= 1, got 'abc'"),
    (["method=halc_tiny", "method.beam_size=2.5"], "method.beam_size", "must be an integer >= 1, got 2.5"),
    (["method=halc_tiny", "method.skip_rate=2"], "method.skip_rate", "must be in [0, 1], got 2"),
    (["method=halc_tiny", "method.max_boxes=abc"], "method.max_boxes", "must be an integer >= 0, got 'abc'"),
    (["method=halc_tiny", "method.dola.relative_top=abc"], "method.dola.relative_top", "must be in [0, 1]"),
    (["method=halc_tiny", "method.default_box=[a,b,c,d]"], "method.default_box", "is not [x0, y0, x1, y1]"),
]

DEMO = [
    (["dataset.num_images=0"], "dataset.num_images", "must be an integer >= 1, got 0"),
    (["dataset.num_images=abc"], "dataset.num_images", "must be an integer >= 1, got 'abc'"),
    (["dataset.image_size=abc"], "dataset.image_size", "must be an integer >= 16, got 'abc'"),
    (["dataset.image_size=4"], "dataset.image_size", "must be an integer >= 16, got 4"),
    (["dataset.seed=abc"], "dataset.seed", "must be an integer, got 'abc'"),
    (["dataset.chair.dialect=bogus"], "dataset.chair.dialect", "'bogus' is not one of opera, original"),
    (["dataset.chair.missing_gt=bogus"], "dataset.chair.missing_gt", "'bogus' is not one of error, reference, skip"),
    (["dataset.chair.synonyms=/nonexistent/synonyms.txt"], "dataset.chair.synonyms", "CHAIR synonyms file not found"),
    (["dataset.opope=abc"], "dataset.opope", "must be true, false or a mapping, got 'abc'"),
]

CASES = GENERATION + RUNTIME + NAMES + METHODS + DEMO


@pytest.mark.parametrize(("overrides", "key", "problem"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_value_is_one_line_naming_its_key(
    tmp_path: Path, no_model_loading: None, overrides: list[str], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        plan(quick_cfg(tmp_path / "results", *overrides))
    assert problem in assert_one_line(info.value, key)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine's answer")
def test_cuda_on_a_machine_without_cuda(tmp_path: Path, no_model_loading: None) -> None:
    with pytest.raises(ConfigError) as info:
        plan(quick_cfg(tmp_path / "results", "runtime.device=cuda"))
    assert "requested but CUDA is not available" in assert_one_line(info.value, "runtime.device")


@pytest.mark.parametrize("name", ["../../escape", "/tmp/vh_bench_escape_abs"])
def test_a_name_never_writes_outside_results_dir(tmp_path: Path, no_model_loading: None, name: str) -> None:
    results = tmp_path / "a" / "b" / "results"
    results.mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        run(quick_cfg(results, f"model.name={name}"))
    assert_one_line(info.value, "model.name")
    # Nothing at all was written: not beside the results, not at the absolute path.
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")] == ["a", "a/b", "a/b/results"]
    assert not Path("/tmp/vh_bench_escape_abs").exists()


def test_safe_names_are_accepted(tmp_path: Path, no_model_loading: None) -> None:
    # The names the shipped configs use must stay valid (a check that refused them would be a bug).
    p = plan(quick_cfg(tmp_path / "results", "model.name=llava-1.5-7b_v2+x"))
    assert p.run_dir.relative_to(tmp_path / "results" / "runs").parts[:3] == ("llava-1.5-7b_v2+x", "demo", "vanilla")


def test_quick_configs_are_what_hydra_composes(tmp_path: Path) -> None:
    # The suite's shortcut must not change what is tested: same values, same types, as a compose.
    from omegaconf import OmegaConf

    from tests.faults.conftest import fast_cfg

    for overrides in (["method=vcd", "method.alpha=abc", "generation.max_new_tokens=2.5"], ["+generation.bogus=1"]):
        quick = OmegaConf.to_container(quick_cfg(tmp_path, *overrides))
        full = OmegaConf.to_container(fast_cfg(tmp_path, *overrides))
        assert sorted(quick.pop("_overrides_")) == sorted(full.pop("_overrides_"))
        assert quick == full
