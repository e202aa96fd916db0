"""OPOPE tests: metrics.md §6 item 17 (worked example, substring cases, seeds, no-candidate case)."""

from __future__ import annotations

import argparse
import gzip
import json
import logging

import pytest

from vh_bench.data.pope_gen import ImageObjects, NoNegativeError, images_from_mapping, sampling_tables
from vh_bench.metrics import opope
from vh_bench.metrics.opope import evaluate, load_captions, says_yes, score_captions_all_splits, score_split

TOL = 1e-9

# metrics.md §4.5, in file order
WORKED_IMAGES = [
    ImageObjects(1, "COCO_val2014_000000000001.jpg", ("person", "dining table", "cup", "pizza")),
    ImageObjects(2, "COCO_val2014_000000000002.jpg", ("dog", "frisbee", "person")),
    ImageObjects(3, "COCO_val2014_000000000003.jpg", ("car", "bus", "person", "traffic light")),
]
WORKED_CAPTIONS = {
    1: "A man eats pizza at a table.",
    2: "A dog catches a frisbee near some vegetables.",
    3: "Cars and a bus wait at the traffic light.",
}
# (image, object, label, prediction) as listed in §4.5
WORKED_QUESTIONS = [
    (1, "person", "yes", "no"), (1, "dog", "no", "no"), (1, "dining table", "yes", "yes"),
    (1, "frisbee", "no", "no"), (1, "cup", "yes", "no"), (1, "car", "no", "no"),
    (2, "dog", "yes", "yes"), (2, "dining table", "no", "yes"), (2, "frisbee", "yes", "yes"),
    (2, "cup", "no", "no"), (2, "person", "yes", "no"), (2, "pizza", "no", "no"),
    (3, "car", "yes", "no"), (3, "dining table", "no", "no"), (3, "bus", "yes", "yes"),
    (3, "cup", "no", "no"), (3, "person", "yes", "no"), (3, "pizza", "no", "no"),
]  # fmt: skip


def test_worked_example_popular():
    tables = sampling_tables(WORKED_IMAGES)
    assert tables.popular_order == (
        "person", "dining table", "cup", "pizza", "dog", "frisbee", "car", "bus", "traffic light",
    )  # fmt: skip
    res = score_split(WORKED_CAPTIONS, WORKED_IMAGES, "popular")
    got = [(q.image_id, q.object, q.label, p) for q, p in zip(res.questions, res.predictions)]
    assert got == WORKED_QUESTIONS
    assert [q.question_id for q in res.questions] == list(range(1, 19))
    d = res.metrics.as_dict()
    assert (d["TP"], d["FP"], d["TN"], d["FN"], d["n"]) == (4, 1, 8, 5, 18)
    assert d["accuracy"] == pytest.approx(0.6666666666666666, abs=TOL)
    assert d["precision"] == pytest.approx(0.8, abs=TOL)
    assert d["recall"] == pytest.approx(0.4444444444444444, abs=TOL)
    assert d["f1"] == pytest.approx(0.5714285714285714, abs=TOL)
    assert d["yes_ratio"] == pytest.approx(0.2777777777777778, abs=TOL)


def test_worked_example_summary():
    out = evaluate(WORKED_CAPTIONS, WORKED_IMAGES, splits=("popular",))
    assert out["objects_source"] == "pope_segmentation"
    assert (out["n_images"], out["n_questions"], out["n_captions_excluded"]) == (3, 18, 0)
    assert out["splits"]["popular"]["f1"] == pytest.approx(0.5714285714285714, abs=TOL)
    assert "n_unparseable" not in out["splits"]["popular"]  # answer diagnostics mean nothing here


@pytest.mark.parametrize(
    "obj, caption, expected",
    [
        ("hot dog", "A photo of a street.", True),  # "hot" in "photo"
        ("hair drier", "A chair by the window.", True),  # "hair" in "chair"
        ("car", "Cars parked on a street.", False),  # case-sensitive
        ("car", "A woman in a scarf.", True),
        ("cat", "A busy location.", True),
        ("dining table", "Some vegetables.", True),
        ("tie", "Two parties.", True),
        ("person", "A man walks.", False),  # no synonyms
        ("traffic light", "A red light.", True),  # any piece
        ("dog", "", False),
    ],
)
def test_substring_decision(obj, caption, expected):
    assert says_yes(obj, caption) is expected


def _many_images(n: int = 12) -> list[ImageObjects]:
    names = ["person", "car", "dog", "cat", "cup", "bus", "chair", "tie", "bowl", "kite", "boat", "bird"]
    return [
        ImageObjects(i, f"img{i}.jpg", tuple(names[(i + k * 5) % len(names)] for k in range(3 + i % 2)))
        for i in range(1, n + 1)
    ]


def test_random_split_seeded():
    imgs = _many_images()
    caps = {im.image_id: "a dog and a cat" for im in imgs}
    a = score_split(caps, imgs, "random", seed=0)
    b = score_split(caps, imgs, "random", seed=0)
    c = score_split(caps, imgs, "random", seed=1)
    assert a.questions == b.questions and a.predictions == b.predictions
    assert a.questions != c.questions


def test_no_candidate_raises_instead_of_looping():
    only = [ImageObjects(1, "a.jpg", ("cat", "dog", "cup"))]
    for split in ("random", "popular", "adversarial"):
        with pytest.raises(NoNegativeError, match="no negative object for image 1"):
            score_split({1: "a cat"}, only, split)


def test_selection_and_excluded_captions(caplog):
    imgs = [*WORKED_IMAGES, ImageObjects(4, "d.jpg", ("cat", "dog"))]  # too few objects
    caps = {**WORKED_CAPTIONS, 4: "A cat.", 5: "No object list for me."}
    with caplog.at_level(logging.WARNING, logger="vh_bench.metrics.opope"):
        out = evaluate(caps, imgs, splits=("popular",))
    assert (out["n_captions"], out["n_captions_excluded"], out["n_images"]) == (5, 2, 3)
    assert "2 of 5 captions excluded" in caplog.text
    # Un-captioned images are not selected and do not feed the frequencies either.
    caps13 = {1: WORKED_CAPTIONS[1], 3: WORKED_CAPTIONS[3]}
    out2 = evaluate(caps13, WORKED_IMAGES, splits=("popular",))
    assert out2["n_images"] == 2 and out2["n_questions"] == 12
    asked = {q.object for q in score_split(caps13, WORKED_IMAGES, "random").questions}
    assert "dog" not in asked and "frisbee" not in asked


def test_gt_mapping_order_and_all_splits():
    gt = {3: frozenset({"traffic light", "car", "bus", "person"}), 1: {"pizza", "cup", "person", "dining table"}, 2: ["person", "frisbee", "dog"]}
    imgs = images_from_mapping(gt)
    assert [im.image_id for im in imgs] == [1, 2, 3]  # ascending ids
    assert imgs[0].objects == ("cup", "dining table", "person", "pizza")  # alphabetical
    assert imgs[0].image == "COCO_val2014_000000000001.jpg"
    out = score_captions_all_splits([(1, "old"), *WORKED_CAPTIONS.items()], gt, seed=0)
    assert out["objects_source"] == "gt_cache"
    assert set(out["splits"]) == {"random", "popular", "adversarial"}
    assert out["n_questions"] == 18
    assert set(out["mean"]) == {"accuracy", "precision", "recall", "f1", "yes_ratio", "f_beta"}
    assert out["pooled"]["n"] == 54


def test_load_captions_last_wins(tmp_path):
    p = tmp_path / "caps.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"image_id": 1, "caption": "first"}, {"image_id": "2", "caption": "two"}, {"image_id": 1, "caption": "last"},
    ]) + "\n")  # fmt: skip
    caps = load_captions(p)
    assert caps.captions == {1: "last", 2: "two"}
    assert (caps.n_lines, caps.n_duplicate_image_ids) == (3, 1)
    q = tmp_path / "caps.json"
    q.write_text(json.dumps([{"id": 7, "text": "x"}]))
    assert load_captions(q, image_id_key="id", caption_key="text").captions == {7: "x"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"image_id": 1, "caption": None}) + "\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: caption must be a string"):
        load_captions(bad)


def test_cli_opope(tmp_path):
    from vh_bench.metrics import pope_cli

    gt = tmp_path / "gt.json.gz"
    with gzip.open(gt, "wt") as fh:
        json.dump({str(im.image_id): sorted(im.objects) for im in WORKED_IMAGES}, fh)
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps({"image_id": k, "caption": v}) + "\n" for k, v in WORKED_CAPTIONS.items()))
    objs = tmp_path / "objects.jsonl"
    objs.write_text("".join(json.dumps({"image": im.image, "objects": list(im.objects)}) + "\n" for im in WORKED_IMAGES))

    parser = argparse.ArgumentParser()
    pope_cli.register(parser.add_subparsers(dest="metric", required=True))

    args = parser.parse_args(["opope", "--captions", str(caps), "--objects", str(objs), "--split", "popular"])
    out = args.func(args)
    assert (out["metric"], out["split"], out["objects_source"]) == ("opope", "popular", "pope_segmentation")
    assert (out["TP"], out["FP"], out["TN"], out["FN"]) == (4, 1, 8, 5)  # §4.5 via the image-name ids
    assert out["captions_sha256"] and out["objects_sha256"]

    args = parser.parse_args(["opope", "--captions", str(caps), "--gt", str(gt), "--seed", "3"])
    out = args.func(args)
    assert out["objects_source"] == "gt_cache" and out["seed"] == 3
    assert set(out["splits"]) == {"random", "popular", "adversarial"}
    json.dumps(out)
    with pytest.raises(SystemExit):
        parser.parse_args(["opope", "--captions", str(caps)])  # an object source is required


def test_load_objects_cache_plain_json(tmp_path):
    p = tmp_path / "gt.json"
    p.write_text(json.dumps({"5": ["dog"], "6": []}))
    assert opope.load_objects_cache(p) == {5: ["dog"], 6: []}
    p.write_text(json.dumps({"x": ["dog"]}))
    with pytest.raises(ValueError, match="not an image id"):
        opope.load_objects_cache(p)
