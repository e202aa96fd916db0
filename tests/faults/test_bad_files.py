"""Broken input files: each is one line naming the key that points at it, before any model loads.

COCO id lists and CHAIR ground-truth caches used to fail after all generation (as an EOFError or
zlib.error traceback, with the manifest left `running`) or, for an empty list, to end `complete`
with 0 samples; pickle checkpoints and hub ids that cannot be reached ended in tracebacks.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.faults.conftest import FAST_ANY_MODEL, assert_one_line, quick_cfg
from vh_bench.errors import ConfigError
from vh_bench.metrics.chair_gt import encode_cache
from vh_bench.models import hub
from vh_bench.runner import plan, run

IDS = [139, 285, 632]


def _coco(tmp_path: Path, ids: bytes | None = None, gt: bytes | None = None, *extra: str):
    (tmp_path / "val2014").mkdir(exist_ok=True)
    ids_file = tmp_path / "ids.txt"
    ids_file.write_bytes(b"".join(b"%d\n" % i for i in IDS) if ids is None else ids)
    gt_file = tmp_path / "gt.json.gz"
    gt_file.write_bytes(encode_cache({i: ["dog"] for i in IDS}) if gt is None else gt)
    return quick_cfg(
        tmp_path / "results", "dataset=coco", f"paths.coco_root={tmp_path}",
        f"dataset.image_ids_file={ids_file}", f"dataset.chair.gt={gt_file}", *extra,
    )


VALID_GZ = encode_cache({i: ["dog"] for i in IDS})

ID_LISTS = {
    "empty": (b"", "lists no image ids"),
    "only blank lines": (b"\n\n  \n", "lists no image ids"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not a text file of image ids"),
    "not a number": (b"139\nabc\n", ":2: 'abc' is not an image id"),
    "float": (b"139\n2.5\n", ":2: '2.5' is not an image id"),
    "duplicate": (b"139\n139\n", "lists duplicate image ids"),
}


@pytest.mark.parametrize("case", list(ID_LISTS))
def test_bad_image_id_list(tmp_path: Path, no_model_loading: None, case: str) -> None:
    data, problem = ID_LISTS[case]
    with pytest.raises(ConfigError) as info:
        plan(_coco(tmp_path, ids=data))
    assert problem in assert_one_line(info.value, "dataset.image_ids_file")


def test_image_id_list_that_is_a_directory(tmp_path: Path, no_model_loading: None) -> None:
    (tmp_path / "val2014").mkdir()
    (tmp_path / "ids").mkdir()
    cfg = quick_cfg(tmp_path / "results", "dataset=coco", f"paths.coco_root={tmp_path}", f"dataset.image_ids_file={tmp_path}/ids")
    with pytest.raises(ConfigError) as info:
        plan(cfg)
    assert "image-id list" in assert_one_line(info.value, "dataset.image_ids_file")


GT_CACHES = {
    "truncated gzip (EOFError)": (VALID_GZ[: len(VALID_GZ) // 2], "corrupt gzip file (EOFError"),
    "flipped bytes in the deflate stream (zlib.error)": (
        VALID_GZ[:12] + bytes(b ^ 0xFF for b in VALID_GZ[12:-8]) + VALID_GZ[-8:], "corrupt gzip file"),
    "bad CRC (BadGzipFile)": (VALID_GZ[:-8] + b"\0\0\0\0" + VALID_GZ[-4:], "corrupt gzip file (BadGzipFile"),
    "gzip header only": (VALID_GZ[:10], "corrupt gzip file"),
    "empty file": (b"", "not valid JSON"),
    "not JSON": (gzip.compress(b"{not json"), "not valid JSON"),
    "not UTF-8": (gzip.compress(b"\xff\xfe{}"), "not valid JSON"),
    "a JSON list": (gzip.compress(b"[1, 2]"), "expected a JSON object"),
    "a key that is not an id": (gzip.compress(json.dumps({"abc": ["dog"]}).encode()), "key 'abc' is not a decimal image id"),
    "an entry that is not a list": (gzip.compress(json.dumps({"139": "dog"}).encode()), "entry '139' is not a list of strings"),
    "uncovered image ids": (encode_cache({139: ["dog"]}), "2 of the 3 images have no ground-truth objects (e.g. 285)"),
}


@pytest.mark.parametrize("case", list(GT_CACHES))
def test_corrupt_ground_truth_cache_fails_before_the_model(tmp_path: Path, no_model_loading: None, case: str) -> None:
    data, problem = GT_CACHES[case]
    with pytest.raises(ConfigError) as info:
        plan(_coco(tmp_path, gt=data))
    msg = assert_one_line(info.value, "dataset.chair.gt")
    assert problem in msg and "gt.json.gz" in msg


def test_uncovered_ids_pass_when_missing_ground_truth_is_allowed(tmp_path: Path, no_model_loading: None) -> None:
    p = plan(_coco(tmp_path, None, encode_cache({139: ["dog"]}), "dataset.chair.missing_gt=skip"))
    assert len(p.dataset.samples()) == 3


def test_valid_coco_inputs_pass(tmp_path: Path, no_model_loading: None) -> None:
    # The same builder with good files plans fine: the failures above come from the damage alone.
    p = plan(_coco(tmp_path))
    assert [s.meta["image_id"] for s in p.dataset.samples()] == IDS


def test_corrupt_ground_truth_run_leaves_no_running_manifest(tmp_path: Path, no_model_loading: None) -> None:
    cfg = _coco(tmp_path, gt=VALID_GZ[:20])
    with pytest.raises(ConfigError):
        run(cfg)
    assert not list((tmp_path / "results").rglob("manifest.json"))


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"\xff\xfe\x00binary", "synonyms"), (b"dog, cat\ncat, dog\n", "maps to both")],
    ids=["binary", "contradictory"],
)
def test_bad_synonyms_file(tmp_path: Path, no_model_loading: None, content: bytes, problem: str) -> None:
    syn = tmp_path / "synonyms.txt"
    syn.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        plan(quick_cfg(tmp_path / "results", f"dataset.chair.synonyms={syn}", f"paths.demo_dir={tmp_path}/demo"))
    assert problem in assert_one_line(info.value, "dataset.chair.synonyms")


# ---- model.path ----------------------------------------------------------------------------


def _llava(tmp_path: Path, path: str):
    return quick_cfg(tmp_path / "results", "model=llava-1.5-7b", f"model.path={path}", fast=FAST_ANY_MODEL)


def _checkpoint(tmp_path: Path, files: dict[str, bytes | str]) -> Path:
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "config.json").write_text(json.dumps({"model_type": "llava"}))
    for name, data in files.items():
        (ckpt / name).write_bytes(data if isinstance(data, bytes) else data.encode())
    return ckpt


CHECKPOINTS = {
    "pickle weights only": ({"pytorch_model.bin": b"\x80\x04K\x01."}, "holds only pickle weights (pytorch_model.bin)"),
    "config.json not JSON": ({"config.json": "{oops", "model.safetensors": b"x"}, "is not valid JSON"),
    "weight index not JSON": ({"model.safetensors": b"x", "model.safetensors.index.json": "{"}, "is not a valid weight index"),
    "weight index without a weight map": ({"model.safetensors": b"x", "model.safetensors.index.json": "{}"},
                                          "is not a valid weight index"),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_checkpoint_directory_refused_with_one_line(tmp_path: Path, no_model_loading: None, case: str) -> None:
    files, problem = CHECKPOINTS[case]
    with pytest.raises(ConfigError) as info:
        plan(_llava(tmp_path, str(_checkpoint(tmp_path, files))))
    assert problem in assert_one_line(info.value, "model.path")


def test_unknown_hub_id_offline_fails_at_once(tmp_path: Path, no_model_loading: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache: nothing is cached
    calls = []
    monkeypatch.setattr("huggingface_hub.HfApi.model_info", lambda *a, **k: calls.append(a))
    with pytest.raises(ConfigError) as info:
        plan(_llava(tmp_path, "nobody/no-such-llava"))
    # The torch-free preflight (issue 16) says it before models/hub.py's own check can.
    line = assert_one_line(info.value, "model.path")
    assert "'nobody/no-such-llava' is not in the" in line and "HF_HUB_OFFLINE" in line
    assert calls == []  # offline: not even one request


@pytest.mark.parametrize("repo_id", ["a/b/c", "bad id with spaces", "-/-"])
def test_malformed_hub_id(tmp_path: Path, no_model_loading: None, repo_id: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan(_llava(tmp_path, f"'{repo_id}'"))
    assert "is neither a local directory nor a hub id" in assert_one_line(info.value, "model.path")


def _online_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, failure: Exception) -> list:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    calls: list = []

    def model_info(self, repo_id, timeout=None, **kwargs):
        calls.append((repo_id, timeout))
        raise failure

    monkeypatch.setattr("huggingface_hub.HfApi.model_info", model_info)
    monkeypatch.setattr("huggingface_hub.try_to_load_from_cache", lambda *a, **k: None)
    return calls


def test_unreachable_hub_is_one_line_after_one_short_request(
    tmp_path: Path, no_model_loading: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _online_hub(monkeypatch, tmp_path, ConnectionError("[Errno -3] Temporary failure in name resolution"))
    with pytest.raises(ConfigError) as info:
        plan(_llava(tmp_path, "llava-hf/llava-1.5-7b-hf"))
    msg = assert_one_line(info.value, "model.path")
    assert "is not cached and the hub cannot be reached (" in msg and "name resolution" in msg
    assert calls == [("llava-hf/llava-1.5-7b-hf", hub.HUB_TIMEOUT_S)]


def test_hub_id_the_hub_does_not_know(tmp_path: Path, no_model_loading: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    http = pytest.importorskip(RepositoryNotFoundError.__mro__[2].__module__)  # huggingface_hub's httpx
    response = http.Response(404, request=http.Request("GET", "https://huggingface.co/api/models/x/y"))
    _online_hub(monkeypatch, tmp_path, RepositoryNotFoundError("404 Client Error", response=response))
    with pytest.raises(ConfigError) as info:
        plan(_llava(tmp_path, "nobody/no-such-llava"))
    assert "no model 'nobody/no-such-llava' on the Hugging Face hub" in assert_one_line(info.value, "model.path")
