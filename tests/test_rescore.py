"""`python -m vh_bench.score run <run_dir>`: a run rescored from its directory alone equals its
results.json, and whatever would make a rescore differ silently (ground truth, selection, lines)
is caught."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import FAST, results_override, run_cli
from vh_bench.config import compose
from vh_bench.metrics.chair import score_caption_file
from vh_bench.metrics.chair_gt import shipped_cache
from vh_bench.rescore import RescoreError, rescore_run
from vh_bench.runner import run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("rescore")
    caption = run(compose([*FAST, results_override(tmp), "runtime.limit=4"]))
    pope = run(compose([*FAST, results_override(tmp), "dataset=demo_pope", "runtime.limit=5"]))
    return {"caption": Path(caption["run_dir"]), "pope": Path(pope["run_dir"])}


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(run_dir, dst)
    return dst


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_caption_run_rescored_equals_results_json(runs: dict[str, Path]) -> None:
    stored = _results(runs["caption"])
    res = rescore_run(runs["caption"])
    assert res.metrics == stored["metrics"]  # every key, the GT's provenance and the OPOPE block included
    assert res.differences == [] and res.reproduced is True and res.n_rows == 4
    gt = stored["metrics"]["chair"]["config"]["gt_cache"]
    # The built ground truth is recorded as a file and its hash, so the rescore needs nothing else.
    assert gt["name"].startswith("built:") and Path(gt["path"]).is_file()
    assert hashlib.sha256(Path(gt["path"]).read_bytes()).hexdigest() == gt["sha256"]
    assert stored["selection"]["n"] == 4


def test_pope_run_rescored_equals_results_json(runs: dict[str, Path]) -> None:
    stored = _results(runs["pope"])
    res = rescore_run(runs["pope"])
    assert res.metrics == stored["metrics"] and res.reproduced is True
    assert stored["metrics"]["n_questions"] == 5 and res.ground_truth is None


def test_cli_exit_status_says_whether_it_reproduced(runs: dict[str, Path], tmp_path: Path) -> None:
    ok = run_cli(["run", str(runs["caption"])], module="vh_bench.score")
    assert ok.returncode == 0, ok.stderr
    summary = json.loads(ok.stdout.strip().splitlines()[-1])
    assert summary["reproduced"] is True and summary["metrics"] == _results(runs["caption"])["metrics"]

    # One caption edited: the rescore must see it (a rescore that copied results.json would not).
    copy = _copy(runs["caption"], tmp_path)
    lines = [json.loads(x) for x in (copy / "samples.jsonl").read_text().splitlines()]
    lines[1]["text"] = "a " + " ".join(["giraffe"] * 5)
    (copy / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    bad = run_cli(["run", str(copy)], module="vh_bench.score")
    assert bad.returncode == 1
    assert re.search(r"^  chair\.\w+: ", bad.stderr, re.M) and json.loads(bad.stdout.splitlines()[-1])["reproduced"] is False
    # --update writes the rescored metrics back (after a metric fix); then the run reproduces.
    upd = run_cli(["run", "--update", str(copy)], module="vh_bench.score")
    assert upd.returncode == 1 and "wrote" in upd.stderr
    stored = _results(copy)
    assert stored["metrics"] == json.loads(upd.stdout.splitlines()[-1])["metrics"] and len(stored["rescored"]) == 1
    assert rescore_run(copy).reproduced is True


def test_a_changed_ground_truth_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(runs["caption"], tmp_path)
    results = _results(copy)
    gt = results["metrics"]["chair"]["config"]["gt_cache"]
    moved = tmp_path / "gt.json.gz"
    shutil.copy(gt["path"], moved)
    gt["path"] = str(moved)
    (copy / "results.json").write_text(json.dumps(results))
    assert rescore_run(copy).reproduced is True  # the same bytes elsewhere: fine

    objects = json.loads(gzip.decompress(moved.read_bytes()))
    first = sorted(objects)[0]
    objects[first] = sorted(set(objects[first]) | {"giraffe"})
    moved.write_bytes(gzip.compress(json.dumps(objects).encode()))
    with pytest.raises(RescoreError, match="changed since the run"):
        rescore_run(copy)

    # Recorded file gone: the dataset's own GT is used only if it hashes to the recorded sha256.
    moved.unlink()
    assert rescore_run(copy).reproduced is True
    gt["sha256"] = "0" * 64
    (copy / "results.json").write_text(json.dumps(results))
    with pytest.raises(RescoreError, match="is gone and the dataset's ground truth"):
        rescore_run(copy)


def test_another_selection_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    copy = _copy(runs["caption"], tmp_path)
    results = _results(copy)
    results["config"]["runtime"]["limit"] = 3
    (copy / "results.json").write_text(json.dumps(results))
    with pytest.raises(RescoreError, match="selects 3 samples"):
        rescore_run(copy)


def test_demo_captions_cannot_match_real_coco_ground_truth(runs: dict[str, Path]) -> None:
    """Demo ids lie above COCO's: scored against COCO's cache by mistake they find no ground truth."""
    lines = [json.loads(x) for x in (runs["caption"] / "samples.jsonl").read_text().splitlines()]
    ids = [line["image_id"] for line in lines]
    assert min(ids) >= 10_000_000
    coco_ids = {int(k) for k in json.loads(gzip.decompress(shipped_cache("pattern").read_bytes()))}
    assert max(coco_ids) < 10_000_000 and not coco_ids & set(ids)
    with pytest.raises(ValueError, match="4 caption\\(s\\) have image ids absent"):
        score_caption_file(runs["caption"] / "samples.jsonl", caption_key="text")
    skipped = score_caption_file(runs["caption"] / "samples.jsonl", caption_key="text", missing_gt="skip")
    assert skipped.summary["n_captions"] == 0 and skipped.summary["CHAIRs"] is None
