"""Fast errors: bad config values and a hub id that cannot be loaded offline fail before torch or
transformers are imported, in one line naming the key, and leave no run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import results_override
from vh_bench.paths import project_root
from vh_bench.preflight import DTYPE_NAMES

# Runs the CLI's entry point in-process and reports which heavy modules it imported.
PROBE = """
import json, runpy, sys
sys.argv = ["vh_bench", *json.loads(sys.argv[1])]
try:
    runpy.run_module("vh_bench", run_name="__main__")
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


def _probe(args: list[str], env: dict[str, str] | None = None) -> tuple[dict, str]:
    full = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=project_root(), capture_output=True,
                          text=True, timeout=300, env=full)  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["generation.max_new_tokens=-3"], "generation.max_new_tokens"),
        (["generation.top_p=0"], "generation.top_p"),
        (["runtime.dtype=float8"], "runtime.dtype"),
        (["runtime.limit=0"], "runtime.limit"),
        (["runtime.attn_backend=flash"], "runtime.attn_backend"),
        (["runtime.shard.index=3", "runtime.shard.count=2"], "runtime.shard"),
        (["dataset=coco", "paths.coco_root=/nonexistent/coco"], "dataset.image_dir"),
        (["model=llava-1.5-7b", "model.path=/nonexistent/llava"], "model.path"),
        (["model.family=blip9"], "model.family"),
        # Every method's value check runs here too (methods/settings.py), not after torch loads.
        (["method=vasparse", "method.lam=abc"], "method.lam"),
        (["method=vasparse", "method.vats.scope=everything"], "method.vats.scope"),
        (["method=vasparse", "method.svcd.stop_layer=-1"], "method.svcd.stop_layer"),
        (["method=fastv", "method.ratio=1.5"], "method.ratio"),
        (["method=topk", "method.mode=x"], "method.mode"),
        (["method=vcd", "method.noise_step=1000"], "method.noise_step"),
        (["method=halc", "method.num_pairs=9"], "method.num_pairs"),
        (["method=halc", "method.dola.relative_top=2"], "method.dola.relative_top"),
    ],
)
def test_bad_values_fail_before_torch_is_imported(tmp_path: Path, overrides: list[str], key: str) -> None:
    out, err = _probe([*overrides, results_override(tmp_path)])
    assert out == {"code": 2, "torch": False, "transformers": False}, err[-2000:]
    lines = [x for x in err.splitlines() if x.strip()]
    assert lines[-1].startswith(f"vh_bench: error: config `{key}`:"), err[-2000:]
    assert not (tmp_path / "runs").exists()


def _fake_cached_model(cache: Path, repo: str) -> None:
    """The Hugging Face cache layout: models--org--name/{refs/main, snapshots/<rev>/config.json}."""
    d = cache / ("models--" + repo.replace("/", "--"))
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text("0" * 40)
    (d / "snapshots" / ("0" * 40)).mkdir(parents=True)
    (d / "snapshots" / ("0" * 40) / "config.json").write_text('{"model_type": "llava"}')


def test_hub_id_not_cached_offline_is_one_line_naming_model_path(tmp_path: Path) -> None:
    cache = tmp_path / "hf"
    cache.mkdir()
    env = {"HF_HUB_CACHE": str(cache)}
    out, err = _probe(["model=llava-1.5-7b", "model.path=someone/not-cached", results_override(tmp_path)], env)
    assert out == {"code": 2, "torch": False, "transformers": False}, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("vh_bench: error: config `model.path`: hub id 'someone/not-cached' is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE" in last and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # no run directory left behind as `failed`

    # The same id, once in the cache, passes the check (and the run goes on to import torch).
    _fake_cached_model(cache, "someone/not-cached")
    check = subprocess.run(
        [sys.executable, "-c", "from vh_bench.models.hub import check_hub_id; check_hub_id('someone/not-cached'); print('ok')"],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **env}, timeout=120,
    )  # fmt: skip
    assert check.stdout.strip() == "ok", check.stderr[-2000:]


def test_the_preflight_and_the_method_give_the_same_line(tmp_path: Path) -> None:
    """One check, two callers: the dataclass's `check` (after torch) says what the preflight says."""
    from methods.vasparse import VASparse
    from vh_bench.errors import ConfigError
    from vh_bench.records import GenConfig

    out, err = _probe(["method=vasparse", "method.sparsity=0", results_override(tmp_path)])
    assert out["code"] == 2 and not out["torch"]
    with pytest.raises(ConfigError) as exc:
        VASparse(sparsity=0).check(GenConfig())
    assert err.strip().splitlines()[-1] == f"vh_bench: error: {exc.value}"


def test_pruning_modes_are_the_pruning_layers() -> None:
    from methods.settings import PRUNING_MODES
    from vh_bench.decoding.pruning import MODES

    assert PRUNING_MODES == MODES


def test_dtype_names_are_the_adapters() -> None:
    from vh_bench.models.llava import DTYPES

    assert sorted(DTYPE_NAMES) == sorted(DTYPES)
