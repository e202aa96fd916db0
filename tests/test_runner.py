"""The runner end to end on the tiny model: lines, results.json, content-addressed resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import FAST, results_override, run_cli
from vh_bench.config import compose
from vh_bench.errors import ConfigError
from vh_bench.models import llava
from vh_bench.runner import plan, run

LINE_KEYS = {"sample_id", "text", "n_new_tokens", "t_prefill_s", "t_decode_s", "error", "token_ids", "image_id"}


def _cfg(tmp_path: Path, *extra: str):
    return compose([*FAST, results_override(tmp_path), *extra])


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad-input errors must come before any model is loaded."""

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(llava.LlavaAdapter, "load", classmethod(refuse))


def test_run_writes_lines_and_results(tmp_path: Path) -> None:
    res = run(_cfg(tmp_path, "runtime.limit=3"))
    run_dir = Path(res["run_dir"])
    assert run_dir.parent.parent.parent.parent == tmp_path / "runs"
    assert run_dir.relative_to(tmp_path / "runs").parts[:3] == ("tiny", "demo", "vanilla")
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "manifest.json", "samples.jsonl", "results.json"}
    lines = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 3
    tiny = res["config"]["model"]["tiny"]
    n_img = (tiny["image_size"] // tiny["patch_size"]) ** 2  # CLIP's patches, its CLS dropped
    for line in lines:
        assert LINE_KEYS <= set(line)
        assert line["error"] is None
        assert 1 <= line["n_new_tokens"] <= 6 and len(line["token_ids"]) == line["n_new_tokens"]
        assert line["t_prefill_s"] > 0 and line["t_decode_s"] > 0
        assert line["n_image_tokens"] == n_img
    assert [x["warmup"] for x in lines] == [True, False, False]
    stored = json.loads((run_dir / "results.json").read_text())
    assert stored["fingerprint"] == res["fingerprint"] and run_dir.name == res["fingerprint"][:8]
    assert stored["complete"] is True and stored["n_done"] == 3 and stored["n_errors"] == 0
    assert stored["model_family"] == "llava" and stored["visual_tokens"] == {"min": n_img, "mean": n_img, "max": n_img}
    assert stored["speed"]["n_timed"] == 2  # the warm-up sample is excluded
    mem = stored["run"]["memory"]  # the KV caches' spare capacity is reported apart from what they use
    assert mem["peak_rss_bytes"] > 0 and 0 < mem["kv_cache_used_bytes"] < mem["kv_cache_reserved_bytes"]
    chair = stored["metrics"]["chair"]
    assert chair["n_captions"] == 3 and chair["CHAIRs"] == chair["n_hallucinated_captions"] / 3
    assert chair["config"]["dialect"] == "opera" and chair["config"]["gt_cache"]["sha256"]
    assert stored["config"]["generation"]["max_new_tokens"] == 6
    assert stored["versions"]["torch"] and stored["versions"]["transformers"]
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "complete"


def test_same_command_resumes_same_directory(tmp_path: Path) -> None:
    first = run(_cfg(tmp_path, "runtime.limit=2"))
    again = run(_cfg(tmp_path, "runtime.limit=3"))
    assert again["run_dir"] == first["run_dir"]
    assert again["run"]["n_generated_now"] == 1 and again["run"]["n_already_done"] == 2
    lines = (Path(again["run_dir"]) / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_outputs_change_the_directory_but_limit_and_paths_do_not(tmp_path: Path) -> None:
    base = plan(_cfg(tmp_path))
    assert plan(_cfg(tmp_path, "runtime.limit=1")).run_dir == base.run_dir
    assert plan(_cfg(tmp_path, "runtime.seed=1")).run_dir != base.run_dir
    assert plan(_cfg(tmp_path, "generation=beam")).run_dir != base.run_dir
    assert plan(_cfg(tmp_path, "dataset.prompt=Describe.")).run_dir != base.run_dir


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["generation.max_new_tokens=-1"], "generation.max_new_tokens"),
        (["generation=beam", "generation.num_beams=0"], "generation.num_beams"),
        (["generation.top_p=0"], "generation.top_p"),
        (["runtime.limit=0"], "runtime.limit"),
        (["runtime.attn_backend=flash"], "runtime.attn_backend"),
        (["model.prompt_template=no placeholders"], "model.prompt_template"),
        (["runtime.dtype=float64"], "runtime.dtype"),
        (["method=vasparse", "method.kernel=cpu", "runtime.dtype=bfloat16"], "method.kernel"),
    ],
)
def test_out_of_range_values_name_their_key(tmp_path: Path, no_model_loading: None, overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=f"config `{key}`"):
        plan(_cfg(tmp_path, *overrides))


def test_missing_coco_root(tmp_path: Path, no_model_loading: None) -> None:
    cfg = compose([results_override(tmp_path), "dataset=coco", f"paths.coco_root={tmp_path}/nowhere"])
    with pytest.raises(ConfigError, match=r"config `dataset.image_dir`.*paths.coco_root"):
        plan(cfg)


def test_missing_image_id_list(tmp_path: Path, no_model_loading: None) -> None:
    (tmp_path / "val2014").mkdir()
    cfg = compose(
        [results_override(tmp_path), "dataset=coco", f"paths.coco_root={tmp_path}", f"dataset.image_ids_file={tmp_path}/ids.txt"]
    )
    with pytest.raises(ConfigError, match=r"config `dataset.image_ids_file`.*not found"):
        plan(cfg)


def _llava_plan(tmp_path: Path, model_path: Path):
    return plan(compose([results_override(tmp_path), "model=llava-1.5-7b", f"model.path={model_path}"]))


@pytest.mark.parametrize(
    ("model_type", "match"),
    [("bert", r"config `model.path`.*'bert' checkpoint, not 'llava'"), ("llava", "no weight files")],
)
def test_checkpoint_directory_that_cannot_be_loaded(
    tmp_path: Path, no_model_loading: None, model_type: str, match: str
) -> None:
    ckpt = tmp_path / model_type
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": model_type}))
    with pytest.raises(ConfigError, match=match):
        _llava_plan(tmp_path, ckpt)


def test_missing_model_directory(tmp_path: Path, no_model_loading: None) -> None:
    with pytest.raises(ConfigError, match=r"config `model.path`.*does not exist"):
        _llava_plan(tmp_path, tmp_path / "absent")


def test_corrupt_and_missing_images_are_recorded_and_the_run_continues(tmp_path: Path) -> None:
    # Break two of the demo images in a private copy of the demo data.
    cfg = _cfg(tmp_path, "runtime.limit=4", f"paths.demo_dir={tmp_path}/demo")
    p = plan(cfg)
    samples = p.dataset.samples()[:4]
    samples[1].image_path.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    samples[2].image_path.unlink()
    res = run(cfg)
    assert res["n_done"] == 4 and res["n_errors"] == 2
    assert "corrupt or unreadable image" in res["errors"][samples[1].sample_id]
    assert "image file missing" in res["errors"][samples[2].sample_id]
    lines = [json.loads(x) for x in (Path(res["run_dir"]) / "samples.jsonl").read_text().splitlines()]
    assert [x["error"] is None for x in lines] == [True, False, False, True]
    assert res["metrics"]["n_scored"] == 2 and res["metrics"]["n_errors"] == 2


def test_cli_single_run_and_config_error(tmp_path: Path) -> None:
    ok = run_cli([*FAST, results_override(tmp_path), "runtime.limit=2"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "| tiny | demo | vanilla |" in ok.stdout
    bad = run_cli([*FAST, results_override(tmp_path), "generation.max_new_tokens=-3"])
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "vh_bench: error: config `generation.max_new_tokens`: must be >= 1, got -3"
    )


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_nan_logits_mark_the_sample_and_the_run_continues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    import torch

    from vh_bench.decoding.branch import Branch

    real_step = Branch.step
    calls = {"n": 0}

    def poisoned(self, tokens):
        calls["n"] += 1
        z = real_step(self, tokens)
        # The second sample's model "diverges" on its first decode step.
        return torch.full_like(z, float("nan")) if calls["n"] == 6 else z

    monkeypatch.setattr(Branch, "step", poisoned)
    res = run(_cfg(tmp_path, "runtime.limit=3", f"generation={strategy}", "generation.max_new_tokens=6"))
    assert res["n_done"] == 3 and res["n_errors"] == 1
    assert "non-finite logits" in next(iter(res["errors"].values()))
    assert res["metrics"]["n_scored"] == 2


def test_partial_or_truncated_weights_give_one_line_errors(tmp_path: Path) -> None:
    import shutil

    from tests.conftest import tiny_checkpoint

    src = Path(tiny_checkpoint())
    # Sharded checkpoint with one shard missing: caught before loading.
    sharded = tmp_path / "sharded"
    shutil.copytree(src, sharded)
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}})
    )
    with pytest.raises(ConfigError, match=r"config `model.path`.*missing 1 of 2 weight shards"):
        llava.check_checkpoint(str(sharded))
    # A weight file cut short by an interrupted download: caught when loading.
    truncated = tmp_path / "truncated"
    shutil.copytree(src, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ConfigError, match=r"config `model.path`: cannot load weights from"):
        llava.LlavaAdapter.load(str(truncated))


def test_malformed_annotation_file_names_the_line_before_generation_and_keeps_the_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(tmp_path, "runtime.limit=2", f"paths.demo_dir={tmp_path}/demo")
    first = run(cfg)
    run_dir = Path(first["run_dir"])
    ann = plan(cfg).dataset.data_dir / "annotations" / "captions_demo.json"
    text = ann.read_text()
    assert '"annotations": [' in text
    ann.write_text(text.replace('"annotations": [', '"annotations": [\n,', 1))
    # The scoring inputs are read before any model is loaded: one line naming the file and line.
    loads = []
    monkeypatch.setattr(llava.LlavaAdapter, "load", classmethod(lambda *a, **k: loads.append(1)))
    with pytest.raises(ConfigError, match=r"config `paths.demo_dir`: .*captions_demo.json: not valid JSON.*line 2 column 1"):
        run(_cfg(tmp_path, "runtime.limit=3", f"paths.demo_dir={tmp_path}/demo"))
    assert loads == []
    assert len((run_dir / "samples.jsonl").read_text().splitlines()) == 2  # nothing lost
    monkeypatch.undo()
    ann.write_text(text)  # fixed: the same command only rescores
    res = run(cfg)
    assert res["run"]["n_generated_now"] == 0 and res["metrics"]["chair"]["n_captions"] == 2
