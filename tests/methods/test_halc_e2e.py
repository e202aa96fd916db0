"""`method=halc` end to end on the demo dataset: sample lines, results.json with CHAIR, labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import FAST, results_override
from vh_bench.config import compose
from vh_bench.runner import run


def _run(tmp_path: Path, *extra: str) -> tuple[dict, list[dict]]:
    overrides = [*FAST, results_override(tmp_path), "runtime.limit=2", "generation.max_new_tokens=8", *extra]
    res = run(compose(overrides))
    lines = [json.loads(x) for x in (Path(res["run_dir"]) / "samples.jsonl").read_text().splitlines()]
    return res, lines


@pytest.mark.parametrize(
    ("extra", "label"),
    [
        # Random tiny Grounding DINO and BLIP (random:tiny, built offline), HALC's defaults otherwise.
        (("method=halc", "method.detector_checkpoint=random:tiny", "method.scorer_checkpoint=random:tiny"), "halc"),
        # The labelled fallback without a detector.
        (("method=halc_tiny", "method.detector=none"), "halc-lite"),
    ],
)
def test_halc_run_writes_results_with_chair(tmp_path: Path, extra: tuple[str, ...], label: str) -> None:
    res, lines = _run(tmp_path, *extra)
    assert res["method"] == res["method_label"] == label
    assert Path(res["run_dir"]).relative_to(tmp_path / "runs").parts[:3] == ("tiny", "demo", label)
    assert res["complete"] and res["n_errors"] == 0 and len(lines) == 2
    for line in lines:
        assert 1 <= line["n_new_tokens"] == len(line["token_ids"]) <= 8
        assert line["t_prefill_s"] > 0 and line["t_decode_s"] > 0
        assert line["extras"]["label"] == label and "<unk>" not in line["text"]
    chair = res["metrics"]["chair"]
    assert chair["n_captions"] == 2
    hp = res["hyperparameters"]
    assert hp["detector_checkpoint"] == ("random:tiny" if label == "halc" else None)
    assert hp["box_threshold"] == (0.45 if label == "halc" else None) and hp["dola"]["relative_top"] == 0.1
    assert "aux_cache_dir" not in hp
    stored = json.loads((Path(res["run_dir"]) / "results.json").read_text())
    assert stored["method_label"] == label
