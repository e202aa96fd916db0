"""`dataset=pope`: check() errors before any model loads, samples(), score(), provenance, config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.data.test_pope_gen import make_instances
from tests.shared_data import shared_path
from vh_bench.data.base import Dataset
from vh_bench.data.pope import PopeDataset
from vh_bench.errors import ConfigError
from vh_bench.metrics.pope import SUFFIX_PRESETS, PopeInputError, file_sha256

TOL = 1e-9

# metrics.md §3.8 toy: (label, answer)
TOY = [
    ("yes", "Yes"), ("no", "No"), ("yes", "Yes, there is a dog."), ("no", "There is no car in the image."),
    ("yes", "No."), ("no", "NO"), ("yes", "I don't see a bench."), ("no", "Not sure."), ("yes", ""),
    ("no", "No, there is not."),
]  # fmt: skip


def image_name(k: int) -> str:
    return f"COCO_val2014_{k:012d}.jpg"


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """A 10-question file (ids 101..110, 5 images) and an image dir holding those images."""
    qfile = tmp_path / "coco_pope_random.json"
    recs = [
        {"question_id": 100 + i, "image": image_name(1 + (i - 1) // 2), "text": "Is there a dog in the image?", "label": lab}
        for i, (lab, _) in enumerate(TOY, 1)
    ]
    qfile.write_text("".join(json.dumps(r) + "\n" for r in recs))
    images = tmp_path / "val2014"
    images.mkdir()
    for k in range(1, 6):
        (images / image_name(k)).write_bytes(b"")
    return qfile, images


def make(files, **kw) -> PopeDataset:
    qfile, images = files
    return PopeDataset(**{"question_file": str(qfile), "image_dir": str(images), **kw})


def rows_for(ds: PopeDataset, answers: list[str]) -> list[dict]:
    return [{**s.meta, "sample_id": s.sample_id, "text": a, "error": None} for s, a in zip(ds.samples(), answers)]


def test_protocol_and_attributes(files):
    ds = make(files)
    assert isinstance(ds, Dataset)
    assert (ds.task, ds.name, ds.max_new_tokens, ds.resolved_version) == ("pope", "pope", 16, "v3")
    ds.check()


def test_samples(files):
    qfile, images = files
    ds = make(files, split="random")
    ds.check()
    s = ds.samples()
    assert len(s) == 10
    assert s[0].sample_id == "pope:coco:v3:random:101"
    assert s[9].sample_id == "pope:coco:v3:random:110"
    assert s[2].image_path == images / image_name(2)
    assert s[0].prompt == "Is there a dog in the image?\nAnswer the question using a single word or phrase."
    assert s[0].meta == {"question_id": 101, "label": "yes", "image": image_name(1)}
    assert len({x.sample_id for x in s}) == 10


@pytest.mark.parametrize(
    "suffix, expected",
    [("llava", SUFFIX_PRESETS["llava"]), ("vcd", " Please answer this question with one word."), ("none", ""),
     (None, ""), (" Answer yes or no.", " Answer yes or no.")],
)  # fmt: skip
def test_suffix_presets_and_literals(files, suffix, expected):
    ds = make(files, question_suffix=suffix)
    assert ds.samples()[0].prompt == "Is there a dog in the image?" + expected
    assert ds.provenance()["question_suffix"] == expected


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"split": "hard"}, "dataset.split"),
        ({"parser": "lenient"}, "dataset.parser"),
        ({"source": "vqa"}, "dataset.source"),
        ({"max_new_tokens": 0}, "dataset.max_new_tokens"),
        ({"image_dir": None}, "dataset.image_dir"),
        ({"image_dir": "/nonexistent/val2014"}, "dataset.image_dir"),
        ({"question_file": "/nonexistent/q.json"}, "dataset.question_file"),
        ({"annotations": "/x/instances.json"}, "dataset.annotations"),
    ],
)
def test_check_errors_name_the_key(files, kwargs, key):
    with pytest.raises(ConfigError) as err:
        make(files, **kwargs).check()
    assert err.value.key == key
    assert str(err.value).startswith(f"config `{key}`")


def test_check_default_path_errors(tmp_path):
    ds = PopeDataset(pope_root=str(tmp_path), image_dir=str(tmp_path))
    with pytest.raises(ConfigError) as err:
        ds.check()
    assert err.value.key == "dataset.pope_root" and "coco/v3/coco_pope_random.json" in str(err.value)
    with pytest.raises(ConfigError) as err:
        PopeDataset(pope_root=str(tmp_path), image_dir=str(tmp_path), version="v2").check()
    assert err.value.key == "dataset.version"
    with pytest.raises(ConfigError) as err:
        PopeDataset(source="gqa", version="v3", pope_root=str(tmp_path), image_dir=str(tmp_path)).check()
    assert err.value.key == "dataset.version"


def test_check_missing_images(files):
    qfile, images = files
    (images / image_name(3)).unlink()
    with pytest.raises(ConfigError, match=r"1 of 5 images of coco_pope_random\.json are not in .*COCO_val2014_000000000003\.jpg") as err:
        make(files).check()
    assert err.value.key == "dataset.image_dir"


def test_check_malformed_file_names_file_and_line(files):
    qfile, _ = files
    lines = qfile.read_text().splitlines()
    lines[7] = lines[7].replace('"label": "no"', '"label": "No"')
    qfile.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"coco_pope_random\.json:8: label must be exactly") as err:
        make(files).check()
    assert err.value.key == "dataset.question_file"


def test_check_detects_v1_content(files):
    qfile, _ = files
    qfile.write_text(qfile.read_text().replace("a dog in the image", "an apple in the imange", 1))
    with pytest.raises(ConfigError, match="is POPE coco v1, not v3") as err:
        make(files).check()
    assert err.value.key == "dataset.version"
    make(files, version="v1").check()


def test_score_toy(files):
    ds = make(files)
    out = ds.score(rows_for(ds, [a for _, a in TOY]))
    assert (out["TP"], out["FP"], out["TN"], out["FN"]) == (4, 2, 3, 1)
    assert out["f1"] == pytest.approx(0.7272727272727272, abs=TOL)
    assert (out["n_questions"], out["n_scored"], out["scored_on"], out["n_errors"], out["n_missing"]) == (10, 10, "all", 0, 0)
    assert (out["source"], out["version"], out["split"], out["parser"]) == ("coco", "v3", "random", "official")
    assert (out["n_empty"], out["n_unparseable"]) == (1, 2)
    opera = make(files, parser="opera").score(rows_for(ds, [a for _, a in TOY]))
    assert (opera["TP"], opera["FP"], opera["TN"], opera["FN"]) == (3, 1, 4, 2)


def test_score_strips_and_ignores_row_order(files):
    ds = make(files)
    rows = rows_for(ds, [f"  {a}\n" for _, a in TOY])
    rows.reverse()
    out = ds.score(rows)
    assert (out["TP"], out["FP"], out["TN"], out["FN"]) == (4, 2, 3, 1)


def test_score_error_rows_are_unanswered(files):
    ds = make(files)
    rows = rows_for(ds, [a for _, a in TOY])
    rows[4] = {**rows[4], "text": "", "error": "image file missing"}  # the (yes, "No.") pair
    out = ds.score(rows)
    assert (out["n_errors"], out["n_scored"], out["scored_on"]) == (1, 9, "answered_subset")
    assert (out["TP"], out["FP"], out["TN"], out["FN"]) == (4, 2, 3, 0)


def test_score_missing_rows(files):
    ds = make(files)
    rows = rows_for(ds, [a for _, a in TOY])[:-2]
    with pytest.raises(PopeInputError, match=r"2 of 10 questions .* \(question_id 109, 110\); set dataset.allow_missing=true"):
        ds.score(rows)
    out = make(files, allow_missing=True).score(rows)
    assert (out["n_missing"], out["n_scored"], out["scored_on"]) == (2, 8, "answered_subset")


def test_score_rejects_foreign_or_inconsistent_rows(files):
    ds = make(files)
    rows = rows_for(ds, [a for _, a in TOY])
    with pytest.raises(PopeInputError, match=r"sample line 1 \(pope:coco:v3:random:101\): not a sample of pope:coco:v3:popular"):
        make(files, split="popular").score(rows)
    bad = [dict(r) for r in rows]
    bad[0]["label"] = "no"
    with pytest.raises(PopeInputError, match="label 'no' differs"):
        ds.score(bad)
    dup = rows + rows[:1]
    with pytest.raises(PopeInputError, match="answered twice"):
        ds.score(dup)


def test_identity_and_provenance(files):
    qfile, images = files
    ds = make(files)
    ident = ds.identity()
    assert ident["questions_sha256"] == file_sha256(qfile)
    assert "parser" not in ident and "question_file" not in ident  # content, not paths or scoring
    assert make(files, parser="opera").identity() == ident
    prov = ds.provenance()
    for key in ("source", "version", "split", "question_file", "questions_sha256", "question_suffix", "parser",
                "question_suffix_preset", "n_questions", "version_detected", "shipped_file"):  # fmt: skip
        assert key in prov
    assert (prov["question_file"], prov["n_questions"], prov["n_yes"], prov["n_no"]) == (str(qfile), 10, 5, 5)
    assert prov["shipped_file"] is None


# ------------------------------------------------------------------ generated questions (demo data)


@pytest.fixture
def annotations(tmp_path: Path) -> tuple[Path, Path]:
    data = make_instances(30)
    ann = tmp_path / "instances_demo.json"
    ann.write_text(json.dumps(data))
    images = tmp_path / "images"
    images.mkdir()
    for im in data["images"]:
        (images / im["file_name"]).write_bytes(b"")
    return ann, images


@pytest.mark.parametrize("split", ["random", "popular", "adversarial"])
def test_generated_questions(annotations, split):
    ann, images = annotations
    ds = PopeDataset(source="demo", split=split, question_file=None, annotations=str(ann), image_dir=str(images), gen_seed=3)
    ds.check()
    s = ds.samples()
    assert len(s) > 0 and len(s) % 6 == 0
    assert s[0].sample_id == f"pope:demo:gen:{split}:1"
    assert [x.meta["label"] for x in s[:6]] == ["yes", "no"] * 3
    assert all(x.image_path.parent == images for x in s)
    again = PopeDataset(source="demo", split=split, annotations=str(ann), image_dir=str(images), gen_seed=3).samples()
    assert again == s  # deterministic
    prov = ds.provenance()
    assert (prov["annotations"], prov["gen_seed"], prov["question_file_format"]) == (str(ann), 3, "generated")
    assert prov["annotations_sha256"] == file_sha256(ann)
    out = ds.score([{**x.meta, "sample_id": x.sample_id, "text": "Yes", "error": None} for x in s])
    assert out["yes_ratio"] == 1.0 and out["recall"] == 1.0 and out["precision"] == pytest.approx(0.5, abs=TOL)


def test_generated_errors(annotations, files):
    ann, images = annotations
    with pytest.raises(ConfigError) as err:
        PopeDataset(question_file=str(files[0]), annotations=str(ann), image_dir=str(images)).check()
    assert err.value.key == "dataset.annotations"
    few = ann.parent / "few.json"
    data = make_instances(30)
    data["annotations"] = data["annotations"][:2]
    few.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="no image in .* has 3 or more") as err:
        PopeDataset(annotations=str(few), image_dir=str(images)).check()
    assert err.value.key == "dataset.annotations"


# ------------------------------------------------------------------ config and shipped files


def test_config_composes_and_instantiates():
    from hydra.utils import instantiate

    from vh_bench.config import compose

    cfg = compose(["dataset=pope", "dataset.split=popular", "dataset.parser=opera"])
    ds = instantiate(cfg.dataset)
    assert isinstance(ds, PopeDataset)
    assert (ds.split, ds.parser, ds.max_new_tokens, ds.resolved_version) == ("popular", "opera", 16, "v3")
    assert str(ds.question_path).endswith("pope/coco/v3/coco_pope_popular.json")
    assert str(ds.image_dir).endswith("val2014")


SHIPPED = [(src, ver, split) for src, ver in (("coco", "v3"), ("coco", "v1"), ("aokvqa", None), ("gqa", None))
           for split in ("random", "popular", "adversarial")]  # fmt: skip


@pytest.mark.shared
@pytest.mark.parametrize("source, version, split", SHIPPED)
def test_shipped_files_resolve_and_check(tmp_path, source, version, split):
    root = shared_path("data/pope")
    ds = PopeDataset(source=source, version=version, split=split, pope_root=str(root), image_dir=str(tmp_path))
    assert ds.question_path.is_file()
    for name in ds._load().images:
        (tmp_path / name).write_bytes(b"")
    ds.check()
    prov = ds.provenance()
    assert prov["shipped_file"] == {"source": source, "version": ds.resolved_version, "split": split}
    assert prov["version_detected"] == ds.resolved_version
    assert len(ds.samples()) == (2910 if (version, split) == ("v1", "random") else 3000)


@pytest.mark.shared
def test_shipped_file_contradicting_the_config(tmp_path):
    v1 = shared_path("data/pope/coco/v1/coco_pope_random.json")
    with pytest.raises(ConfigError, match="is POPE coco v1, not v3") as err:
        PopeDataset(question_file=str(v1), image_dir=str(tmp_path)).check()
    assert err.value.key == "dataset.version"
    popular = shared_path("data/pope/coco/v3/coco_pope_popular.json")
    with pytest.raises(ConfigError) as err:
        PopeDataset(question_file=str(popular), split="random", image_dir=str(tmp_path)).check()
    assert err.value.key == "dataset.split"
    gqa = shared_path("data/pope/gqa/gqa_pope_seem_random.json")
    with pytest.raises(ConfigError) as err:
        PopeDataset(question_file=str(gqa), image_dir=str(tmp_path)).check()
    assert err.value.key == "dataset.source"
