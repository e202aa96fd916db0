"""The shipped scenes checkpoint: its recorded sha256, bad-input errors, and the premise on a small
fixed subset (the full measurement is `python -m vh_bench.scenes check`, results/scenes/)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import results_override, run_cli
from vh_bench.config import compose
from vh_bench.errors import ConfigError
from vh_bench.paths import project_root
from vh_bench.runner import plan
from vh_bench.scenes.check import run_split, scene_objects, texts, _data_dir
from vh_bench.scenes.rates import control_indicators, mentions, planted_indicators
from vh_bench.scenes.splits import ScenesConfig, probe_partners

SHIPPED = project_root() / "vh_bench" / "scenes" / "checkpoint"
FAST = ["runtime.progress=false", "runtime.scoring_worker=false", "runtime.num_threads=1"]


def test_shipped_checkpoint_is_the_one_the_config_records():
    weights = SHIPPED / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert compose(["model=scenes"]).model.sha256 == digest
    assert json.loads((SHIPPED / "training.json").read_text())["model_safetensors_sha256"] == digest
    assert weights.stat().st_size <= 15 * 2**20


def test_the_dataset_default_matches_the_training_data():
    spec = json.loads((SHIPPED / "vh_bench_spec.json").read_text())["scenes"]
    ds = compose(["dataset=scenes"]).dataset.scenes
    assert {k: spec[k] for k in ds} == dict(ds)


def _copy(tmp_path: Path) -> Path:
    d = tmp_path / "ckpt"
    shutil.copytree(SHIPPED, d)
    return d


@pytest.mark.parametrize("damage", ["missing_dir", "missing_weights", "truncated", "flipped"])
def test_bad_checkpoint_is_one_line_naming_model_path(tmp_path, damage):
    d = _copy(tmp_path)
    weights = d / "model.safetensors"
    if damage == "missing_dir":
        shutil.rmtree(d)
    elif damage == "missing_weights":
        weights.unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        data = bytearray(weights.read_bytes())
        data[-10] ^= 0xFF
        weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="model.path"):
        plan(compose(["model=scenes", f"model.path={d}", "dataset=scenes", results_override(tmp_path)]))


@pytest.mark.slow
def test_bad_checkpoint_on_the_command_line(tmp_path):
    d = _copy(tmp_path)
    (d / "model.safetensors").write_bytes(b"not safetensors")
    proc = run_cli(["model=scenes", f"model.path={d}", "dataset=scenes", results_override(tmp_path)])
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "model.path" in last and "Traceback" not in proc.stderr


def test_premise_holds_on_a_small_fixed_subset(tmp_path):
    """60 scenes per split with the shipped checkpoint: it sees, and it names the absent partner
    more often than in control scenes."""
    ov = [results_override(tmp_path), *FAST]
    test = run_split("test", ov, 60)
    probe = run_split("probe", ov, 60)
    control = run_split("control", ov, 60)
    recall = test.results["metrics"]["chair"]["Recall"]
    planted = planted_indicators(mentions(texts(probe)), probe_partners(ScenesConfig(**compose(["dataset=scenes"]).dataset.scenes)))
    ctrl = control_indicators(mentions(texts(control)), scene_objects(_data_dir("control", ov)))
    assert len(planted) == 60 and len(ctrl) == 60
    assert recall >= 0.8
    assert sum(planted) / len(planted) > sum(ctrl) / len(ctrl)
