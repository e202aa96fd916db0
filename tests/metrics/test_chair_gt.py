"""CHAIR ground truth: metrics.md §6 item 11 (shipped caches) and the §1.7 builder on a small
COCO-format fixture written by the test; optionally the real COCO reproduction."""

from __future__ import annotations

import argparse
import gzip
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.shared_data import shared_path
from vh_bench.metrics import chair_cli, chair_gt
from vh_bench.metrics.chair import evaluate_chair, read_image_list
from vh_bench.metrics.chair_gt import GroundTruth, build_ground_truth, build_objects, load_ground_truth

pytestmark = pytest.mark.usefixtures("chair_no_download", "chair_synonyms", "chair_nltk_root")


# --- §6.11 shipped caches ----------------------------------------------------------------------

def test_shipped_caches(chair_gt_pattern, chair_gt_nltk):
    pat, nl = chair_gt_pattern.objects, chair_gt_nltk.objects
    assert len(pat) == len(nl) == 123_287 and pat.keys() == nl.keys()
    assert sum(1 for v in pat.values() if not v) == 725
    assert sum(1 for v in nl.values() if not v) == 723
    assert sum(1 for k in pat if pat[k] != nl[k]) == 1_741
    assert 3.15 < sum(map(len, pat.values())) / len(pat) < 3.23
    plus = Counter(o for k in pat for o in nl[k] - pat[k])
    minus = Counter(o for k in pat for o in pat[k] - nl[k])
    assert (plus["bus"], plus["tie"], plus["chair"], plus["skis"]) == (461, 417, 359, 129)
    assert (minus["person"], minus["vase"], minus["car"], minus["bird"]) == (76, 13, 8, 5)
    assert chair_gt_pattern.built_with == "original" and chair_gt_nltk.built_with == "opera"
    assert chair_gt_pattern.sha256 == chair_gt.SHIPPED_SHA256["pattern"]
    assert all(isinstance(k, int) for k in list(pat)[:100])


def test_cache_restricted_to_ids(chair_gt_pattern):
    path = shared_path("data/chair/gt_objects_pattern.json.gz")
    small = load_ground_truth(path, image_ids=[9, 25, 123456789])
    assert small.objects == {9: chair_gt_pattern.objects[9], 25: chair_gt_pattern.objects[25]}
    assert small.sha256 == chair_gt_pattern.sha256  # the file's hash, not the subset's


@pytest.mark.parametrize(("content", "match"), [
    (b"[1, 2]", "expected a JSON object"),
    (b'{"x1": ["dog"]}', "not a decimal image id"),
    (b'{"1": "dog"}', "not a list of strings"),
    (b"{", "not valid JSON"),
])
def test_bad_cache_file(tmp_path, content, match):
    p = tmp_path / "gt.json.gz"
    p.write_bytes(gzip.compress(content))
    with pytest.raises(ValueError, match=match) as err:
        load_ground_truth(p)
    assert str(p) in str(err.value)


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope")):
        load_ground_truth(tmp_path / "nope")


# --- §1.7 builder on a small COCO-format fixture -----------------------------------------------

CATEGORIES = [{"supercategory": "animal", "id": 18, "name": "dog"},
              {"supercategory": "furniture", "id": 67, "name": "dining table"},
              {"supercategory": "vehicle", "id": 6, "name": "bus"}]


def write_coco(folder: Path, *, pretty: bool = False) -> Path:
    """Three images: 1 has instances + captions, 2 captions only, 3 instances only (crowd RLE)."""
    folder.mkdir(parents=True, exist_ok=True)
    instances = {
        "info": {"description": "vh_bench test fixture"},
        "images": [{"id": i, "file_name": f"COCO_demo_{i:012d}.jpg"} for i in (1, 2, 3)],
        "annotations": [
            {"segmentation": [[10.5, 20.25, 30.0, 40.0, 1e2, 2.5E1]], "area": 12.5, "iscrowd": 0,
             "image_id": 1, "bbox": [1.0, 2.0, 3.5, 4.0], "category_id": 18, "id": 1},
            {"segmentation": [[1, 2, 3, 4], [5, 6, 7, 8]], "area": 3.0, "iscrowd": 0,
             "image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 67, "id": 2},
            {"segmentation": {"counts": [5, 10, 15], "size": [480, 640]}, "area": 9.0, "iscrowd": 1,
             "image_id": 3, "bbox": [2, 2, 2, 2], "category_id": 6, "id": 3},
        ],
        "categories": CATEGORIES,
    }
    captions = {
        "images": instances["images"][:2],
        "annotations": [
            {"image_id": 1, "id": 10, "caption": "A man feeds a dog at the table."},
            {"image_id": 1, "id": 11, "caption": "A man and his dog."},
            {"image_id": 2, "id": 12, "caption": "People skiing near a bus."},
            {"image_id": 2, "id": 13, "caption": "Two men are seated outside."},
        ],
    }
    indent = 2 if pretty else None
    (folder / "instances_demo.json").write_text(json.dumps(instances, indent=indent))
    (folder / "captions_demo.json").write_text(json.dumps(captions, indent=indent))
    return folder


EXPECTED = {
    "opera": {1: {"dog", "dining table", "person"}, 2: {"person", "skis", "bus", "chair"}, 3: {"bus"}},
    "original": {1: {"dog", "dining table", "person"}, 2: {"person"}, 3: {"bus"}},
}


@pytest.mark.parametrize("pretty", [False, True])
@pytest.mark.parametrize("dialect", ["opera", "original"])
def test_build_gt_small_fixture(tmp_path, dialect, pretty):
    folder = write_coco(tmp_path / "ann", pretty=pretty)
    gt, path = build_ground_truth(folder, dialect=dialect, cache_dir=tmp_path / "cache", progress=False)
    assert {k: set(v) for k, v in gt.objects.items()} == EXPECTED[dialect]
    assert gt.built_with == dialect and gt.name.startswith("built:")
    # written as gzip JSON with sorted lists and ascending ids; the sha256 is of that file
    on_disk = json.loads(gzip.decompress(path.read_bytes()))
    assert list(on_disk) == ["1", "2", "3"] and on_disk["1"] == sorted(on_disk["1"])
    assert chair_gt._sha256_bytes(path.read_bytes()) == gt.sha256
    meta = json.loads(path.with_name(path.name.replace(".json.gz", ".meta.json")).read_text())
    assert meta["dialect"] == dialect and set(meta["inputs"]) == {"instances_demo.json", "captions_demo.json"}
    # loading the written cache recovers the same sets and the recorded dialect
    again = load_ground_truth(path)
    assert again.objects == gt.objects and again.built_with == dialect


def test_geometry_stripping_matches_plain_json(tmp_path):
    folder = write_coco(tmp_path / "ann")
    path = folder / "instances_demo.json"
    lean = chair_gt._load_annotation_file(path, strip_geometry=True)
    plain = json.loads(path.read_text())
    key = [(a["image_id"], a["category_id"], a["id"], a["iscrowd"]) for a in plain["annotations"]]
    assert [(a["image_id"], a["category_id"], a["id"], a["iscrowd"]) for a in lean["annotations"]] == key
    assert lean["annotations"][0]["segmentation"] == 0 and lean["annotations"][0]["bbox"] == 0
    assert lean["annotations"][2]["segmentation"] == {"counts": [5, 10, 15], "size": [480, 640]}
    assert lean["categories"] == plain["categories"]


def test_restricted_build_equals_full(tmp_path):
    folder = write_coco(tmp_path / "ann")
    full, _ = build_ground_truth(folder, dialect="opera", cache_dir=tmp_path / "c", progress=False)
    part, _ = build_ground_truth(folder, dialect="opera", image_ids=[2, 3, 77], cache_dir=tmp_path / "c",
                                 progress=False)
    assert part.objects == {2: full.objects[2], 3: full.objects[3]}
    assert part.name != full.name  # different inputs -> different cache entries


def test_build_cache_hit_skips_parsing(tmp_path, monkeypatch):
    folder = write_coco(tmp_path / "ann")
    first = load_ground_truth(folder, dialect="opera", cache_dir=tmp_path / "c")

    def boom(*a, **k):
        raise AssertionError("annotation files parsed despite a cache hit")

    monkeypatch.setattr(chair_gt, "_load_annotation_file", boom)
    second = load_ground_truth(folder, dialect="opera", cache_dir=tmp_path / "c")
    assert second == first
    with pytest.raises(AssertionError, match="despite a cache hit"):  # other dialect: other key
        load_ground_truth(folder, dialect="original", cache_dir=tmp_path / "c")
    # changing an input file changes the key, so a stale cache is never reused
    monkeypatch.undo()
    cap = folder / "captions_demo.json"
    cap.write_text(cap.read_text().replace("People skiing near a bus.", "A cat."))
    third = load_ground_truth(folder, dialect="opera", cache_dir=tmp_path / "c")
    assert third.objects[2] == frozenset({"cat", "chair"}) and third.name != first.name


def test_build_objects_on_dicts():
    inst = {"annotations": [{"image_id": 5, "category_id": 18}], "categories": CATEGORIES}
    caps = {"annotations": [{"image_id": 6, "caption": "Nothing here."}]}
    assert build_objects([inst], [caps], dialect="original") == {5: {"dog"}, 6: set()}


def test_builder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_ground_truth(tmp_path / "absent", progress=False)
    folder = write_coco(tmp_path / "ann")
    (folder / "captions_demo.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no captions_\*\.json"):
        build_ground_truth(folder, progress=False)
    folder = write_coco(tmp_path / "ann2")
    data = json.loads((folder / "instances_demo.json").read_text())
    data["categories"][0]["name"] = "unicorn"
    (folder / "instances_demo.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unicorn"):
        build_ground_truth(folder, cache_dir=tmp_path / "c", progress=False)
    (folder / "instances_demo.json").write_text("{not json")
    with pytest.raises(ValueError, match="instances_demo.json: not valid JSON"):
        build_ground_truth(folder, cache_dir=tmp_path / "c", progress=False)


def test_cli_build_gt_and_score(tmp_path):
    folder = write_coco(tmp_path / "ann")
    parser = argparse.ArgumentParser()
    chair_cli.register(parser.add_subparsers(dest="metric", required=True))
    ids = tmp_path / "ids.txt"
    ids.write_text("1\n2\n")
    out = tmp_path / "gt" / "demo.json.gz"
    args = parser.parse_args(["build-gt", "--annotations", str(folder), "--dialect", "original",
                              "--image-list", str(ids), "--out", str(out)])
    summary = args.func(args)
    assert summary["n_images"] == 2 and summary["built_with"] == "original" and summary["path"] == str(out)
    assert summary["restricted_to"] == 2
    caps = tmp_path / "caps.jsonl"
    caps.write_text('{"image_id": 1, "caption": "A dog near a horse."}\n')
    for gt_arg in (str(out), str(folder)):  # a built cache file, or the folder itself
        args = parser.parse_args(["chair", "--captions", str(caps), "--gt", gt_arg, "--dialect", "original",
                                  "--gt-cache-dir", str(tmp_path / "c")])
        s = args.func(args)
        assert (s["object_mentions"], s["hallucinated_mentions"]) == (2, 1)
        assert s["config"]["gt_cache"]["built_with"] == "original"


def test_evaluate_accepts_groundtruth_record():
    gt = GroundTruth({1: frozenset({"dog"})}, "inline", "0" * 64, None)
    assert evaluate_chair([(1, "A dog.")], gt).summary["CHAIRs"] == 0.0


# --- §6.11 optional: build-gt reproduces the shipped caches (needs real COCO annotations) ------

def _coco_annotations() -> Path | None:
    env = os.environ.get("VH_BENCH_COCO_ANNOTATIONS")
    return Path(env) if env and Path(env).is_dir() else None


@pytest.mark.slow
@pytest.mark.skipif(_coco_annotations() is None,
                    reason="set VH_BENCH_COCO_ANNOTATIONS to a folder with COCO 2014 instances_*/captions_*")
@pytest.mark.parametrize(("dialect", "cache"), [("original", "pattern"), ("opera", "nltk")])
def test_build_gt_reproduces_shipped_cache(dialect, cache, chair_gts, tmp_path):
    ids = set(read_image_list(shared_path("data/chair/chair500_opera_llava.txt")))
    ids |= set(read_image_list(shared_path("data/chair/chair500_opera_instructblip.txt")))
    built, _ = build_ground_truth(_coco_annotations(), dialect=dialect, image_ids=ids, cache_dir=tmp_path,
                                  progress=False)
    shipped = chair_gts[cache].objects
    differing = sorted(i for i in ids if built.objects.get(i) != shipped.get(i))
    print(f"build-gt {dialect} vs gt_objects_{cache}: {len(differing)} differing images of {len(ids)}")
    assert differing == []
