"""CHAIR scoring: metrics.md §6 items 6-10 (toy, golden, original dialect, missing GT, zero
mentions), the §1.6/§1.8 formulas, the §1.9 output and the CLI."""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from tests.shared_data import shared_path
from vh_bench.metrics import chair_cli
from vh_bench.metrics.chair import (
    ChairResult,
    GroundTruth,
    check_image_list,
    evaluate_chair,
    read_captions,
    read_image_list,
    score_caption_file,
)

pytestmark = pytest.mark.usefixtures("chair_no_download", "chair_synonyms", "chair_nltk_root")

TOL = 1e-9
LOGS = [f"{m}/{d}.jsonl" for m in ("instructblip", "minigpt4") for d in ("greedy", "beam5", "ours")]

# §1.11: (halluc. captions, halluc. mentions, mentions, covered, gt_sum, Σ tokens) per log and cache
GOLDEN_COUNTS = {
    ("instructblip/greedy.jsonl", "pattern"): (294, 524, 2213, 1075, 1548, 54634),
    ("instructblip/greedy.jsonl", "nltk"): (294, 524, 2213, 1075, 1556, 54634),
    ("instructblip/beam5.jsonl", "pattern"): (278, 626, 3965, 1161, 1548, 52652),
    ("instructblip/beam5.jsonl", "nltk"): (278, 625, 3965, 1162, 1556, 52652),
    ("instructblip/ours.jsonl", "pattern"): (232, 487, 3431, 1133, 1548, 46285),
    ("instructblip/ours.jsonl", "nltk"): (232, 486, 3431, 1134, 1556, 46285),
    ("minigpt4/greedy.jsonl", "pattern"): (159, 253, 2567, 960, 1524, 42333),
    ("minigpt4/greedy.jsonl", "nltk"): (158, 252, 2567, 961, 1533, 42333),
    ("minigpt4/beam5.jsonl", "pattern"): (153, 220, 2310, 960, 1524, 36690),
    ("minigpt4/beam5.jsonl", "nltk"): (151, 217, 2310, 962, 1533, 36690),
    ("minigpt4/ours.jsonl", "pattern"): (131, 195, 2047, 937, 1524, 31684),
    ("minigpt4/ours.jsonl", "nltk"): (129, 192, 2047, 939, 1533, 31684),
}

# §2: CHAIR_S / CHAIR_I ×100 to 1 decimal with the original dialect, per cache
ORIGINAL_DIALECT = {
    "instructblip/greedy.jsonl": {"pattern": (57.2, 22.7), "nltk": (57.2, 22.7)},
    "instructblip/beam5.jsonl": {"pattern": (55.6, 15.5), "nltk": (55.6, 15.5)},
    "instructblip/ours.jsonl": {"pattern": (45.6, 13.9), "nltk": (45.6, 13.9)},
    "minigpt4/greedy.jsonl": {"pattern": (29.0, 9.2), "nltk": (29.0, 9.2)},
    "minigpt4/beam5.jsonl": {"pattern": (27.2, 8.8), "nltk": (27.0, 8.7)},
    "minigpt4/ours.jsonl": {"pattern": (23.0, 8.8), "nltk": (22.8, 8.7)},
}


def toy_gt() -> GroundTruth:
    objects = {1: frozenset({"cat", "dining table", "person"}), 2: frozenset({"dog", "person"}),
               3: frozenset({"sink", "toilet"})}
    return GroundTruth(objects, "toy", "0" * 64, None)


TOY = [
    (1, "A cat sits on the table."),
    (2, "A dog chases a frisbee. Another frisbee lies nearby."),
    (3, "The toilet seat is up and a seat stands near the toilet."),
]


@pytest.fixture(scope="module")
def golden_captions(chair_golden_dir) -> dict[str, list[tuple[int, str]]]:
    return {log: read_captions(chair_golden_dir / log) for log in LOGS}


# --- §6.6 toy ----------------------------------------------------------------------------------

@pytest.mark.parametrize("dialect", ["opera", "original"])
def test_toy_example(dialect):
    res = evaluate_chair(TOY, toy_gt(), dialect=dialect)
    s = res.summary
    assert s["CHAIRs"] == 1 / 3
    assert s["CHAIRi"] == 2 / 7
    assert s["Recall"] == 4 / 7
    assert s["Len"] == 0.01 * 30 / 3 == 0.09999999999999999
    assert s["avg_tokens"] == 10.0
    assert (s["object_mentions"], s["hallucinated_mentions"], s["n_hallucinated_captions"]) == (7, 2, 1)
    assert (s["covered_sum"], s["gt_sum"], s["tokens_sum"], s["n_captions"]) == (4, 7, 30, 3)
    assert [p["metrics"]["n_tokens"] for p in res.per_caption] == [7, 11, 12]
    assert [p["mscoco_generated_words"] for p in res.per_caption] == [
        ["cat", "dining table"], ["dog", "frisbee", "frisbee"], ["toilet", "toilet"]]
    second = res.per_caption[1]
    assert second["metrics"]["CHAIRi"] == 2 / 3 and second["metrics"]["CHAIRs"] == 1
    assert second["metrics"]["Recall"] == 1 / 2
    assert second["mscoco_hallucinated_words"] == [["frisbee", "frisbee"], ["frisbee", "frisbee"]]
    assert second["hallucination_idxs"] == [4, 7]
    assert res.per_caption[0]["mscoco_gt_words"] == ["cat", "dining table", "person"]  # sorted
    assert res.per_caption[2]["words"][:3] == ["the", "toilet", "be" if dialect == "opera" else "is"]
    assert all(p["metrics"]["Len"] == 0.0 for p in res.per_caption)  # as the reference
    assert s["warnings"] == []


def test_pooled_not_mean_of_captions():
    # CHAIR_I pools mentions: (0 + 2 + 0) / 7, not the mean of per-caption 0, 2/3, 0
    res = evaluate_chair(TOY, toy_gt())
    mean = sum(p["metrics"]["CHAIRi"] for p in res.per_caption) / 3
    assert res.summary["CHAIRi"] == 2 / 7 != mean


# --- §6.7 golden -------------------------------------------------------------------------------

@pytest.mark.parametrize("cache", ["pattern", "nltk"])
@pytest.mark.parametrize("log", LOGS)
def test_golden(log, cache, golden_captions, chair_gts, chair_expected):
    s = evaluate_chair(golden_captions[log], chair_gts[cache], dialect="opera").summary
    want = chair_expected[log][cache]
    for key in ("CHAIRs", "CHAIRi", "Recall", "Len"):
        assert abs(s[key] - want[key]) <= TOL, (key, s[key], want[key])
    got = (s["n_hallucinated_captions"], s["hallucinated_mentions"], s["object_mentions"], s["covered_sum"],
           s["gt_sum"], s["tokens_sum"])
    assert got == GOLDEN_COUNTS[(log, cache)]
    assert s["n_captions"] == 500 and s["n_missing_gt"] == 0
    assert s["config"]["gt_cache"]["name"] == f"gt_objects_{cache}.json.gz"


# --- §6.8 original dialect ---------------------------------------------------------------------

@pytest.mark.parametrize("cache", ["pattern", "nltk"])
@pytest.mark.parametrize("log", LOGS)
def test_original_dialect_table(log, cache, golden_captions, chair_gts):
    s = evaluate_chair(golden_captions[log], chair_gts[cache], dialect="original").summary
    assert (round(100 * s["CHAIRs"], 1), round(100 * s["CHAIRi"], 1)) == ORIGINAL_DIALECT[log][cache]
    assert s["config"]["singularizer"] == "patternlite-3.6"


def test_original_dialect_exact_counts(golden_captions, chair_gt_pattern):
    s = evaluate_chair(golden_captions["minigpt4/greedy.jsonl"], chair_gt_pattern, dialect="original").summary
    assert s["n_hallucinated_captions"] == 145
    assert (s["hallucinated_mentions"], s["object_mentions"]) == (233, 2522)
    assert s["tokens_sum"] == 42340


# --- §6.9 missing GT ---------------------------------------------------------------------------

MISSING = [*TOY, (99, "A dog and a cat on a bed.")]


def test_missing_gt_error():
    with pytest.raises(ValueError, match="99") as err:
        evaluate_chair(MISSING, toy_gt())
    assert "\n" not in str(err.value) and "missing_gt" in str(err.value)


def test_missing_gt_reference():
    s = evaluate_chair(MISSING, toy_gt(), missing_gt="reference").summary
    assert s["n_missing_gt"] == 1 and s["n_captions"] == 4
    assert (s["object_mentions"], s["hallucinated_mentions"]) == (10, 5)  # 3 more, all hallucinated
    assert s["gt_sum"] == 7 and s["Recall"] == 4 / 7  # adds 0 to the Recall denominator
    assert s["CHAIRs"] == 2 / 4


def test_missing_gt_skip():
    res = evaluate_chair(MISSING, toy_gt(), missing_gt="skip")
    base = evaluate_chair(TOY, toy_gt()).summary
    s = res.summary
    assert s["n_missing_gt"] == 1
    for key in ("CHAIRs", "CHAIRi", "Recall", "Len", "n_captions", "object_mentions", "tokens_sum"):
        assert s[key] == base[key]
    assert [p["image_id"] for p in res.per_caption] == [1, 2, 3]


def test_missing_gt_bad_mode():
    with pytest.raises(ValueError, match="missing_gt"):
        evaluate_chair(TOY, toy_gt(), missing_gt="ignore")


# --- §6.10 zero denominators -------------------------------------------------------------------

def test_zero_mentions_is_null_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="vh_bench.metrics.chair"):
        s = evaluate_chair([(1, "Nothing to see here."), (2, "")], toy_gt()).summary
    assert s["CHAIRi"] is None and s["object_mentions"] == 0
    assert s["CHAIRs"] == 0.0 and s["Recall"] == 0.0
    assert any("CHAIRi" in r.getMessage() for r in caplog.records)
    assert any("CHAIRi" in w for w in s["warnings"])
    assert '"CHAIRi": null' in json.dumps(s)


def test_empty_caption_has_no_tokens():
    res = evaluate_chair([(1, "")], toy_gt())
    assert res.per_caption[0]["metrics"]["n_tokens"] == 0 and res.summary["tokens_sum"] == 0
    assert res.per_caption[0]["metrics"]["CHAIRi"] == 0.0


def test_no_captions_all_null():
    s = evaluate_chair([], toy_gt()).summary
    assert s["CHAIRs"] is None and s["CHAIRi"] is None and s["Recall"] is None and s["Len"] is None
    assert s["n_captions"] == 0


def test_duplicates_scored_and_counted():
    s = evaluate_chair([TOY[1], TOY[1]], toy_gt()).summary
    assert s["n_captions"] == 2 and s["n_duplicate_image_ids"] == 1 and s["hallucinated_mentions"] == 4


# --- §1.1 inputs -------------------------------------------------------------------------------

def test_read_captions_jsonl_and_array(tmp_path):
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"image_id": "42", "caption": "A dog. "}\n\n{"image_id": 7, "caption": "x"}\n')
    assert read_captions(jl) == [(42, "A dog. "), (7, "x")]  # caption kept exactly, id normalised
    arr = tmp_path / "c.json"
    arr.write_text(json.dumps([{"meta": {"image_id": 3}, "text": "a cat"}]))
    assert read_captions(arr, image_id_key="meta.image_id", caption_key="text") == [(3, "a cat")]


@pytest.mark.parametrize(("line", "match"), [
    ('{"caption": "a"}', "missing field 'image_id'"),
    ('{"image_id": 1.5, "caption": "a"}', "not an int"),
    ('{"image_id": "x1", "caption": "a"}', "not a decimal"),
    ('{"image_id": 1, "caption": null}', "not a string"),
    ('{"image_id": 1, "caption": "a"', "invalid JSON"),
])
def test_read_captions_errors(tmp_path, line, match):
    p = tmp_path / "bad.jsonl"
    p.write_text(line + "\n")
    with pytest.raises(ValueError, match=match) as err:
        read_captions(p)
    assert f"{p}:1" in str(err.value) and "\n" not in str(err.value)


def test_image_list_check():
    check_image_list([1, 2, 3], [3, 2, 1])
    with pytest.raises(ValueError, match=r"1 missing .*1 extra .*1 duplicate"):
        check_image_list([1, 2, 2, 9], [1, 2, 3])


def test_shipped_image_lists():
    for name in ("chair500_opera_llava.txt", "chair500_opera_instructblip.txt"):
        ids = read_image_list(shared_path(f"data/chair/{name}"))
        assert len(ids) == len(set(ids)) == 500 and ids == sorted(ids)
    a = set(read_image_list(shared_path("data/chair/chair500_opera_llava.txt")))
    b = set(read_image_list(shared_path("data/chair/chair500_opera_instructblip.txt")))
    assert len(a & b) == 6


# --- provenance, presets, CLI ------------------------------------------------------------------

def test_score_caption_file_provenance(chair_golden_dir, chair_gt_nltk):
    res = score_caption_file(chair_golden_dir / "minigpt4/greedy.jsonl", preset="halc", gt=chair_gt_nltk,
                             image_list=shared_path("data/chair/chair500_opera_llava.txt"))
    cfg = res.summary["config"]
    assert cfg["preset"] == "halc" and cfg["dialect"] == "opera"
    assert cfg["gt_cache"]["built_with"] == "opera" and len(cfg["captions"]["sha256"]) == 64
    assert cfg["image_list"]["n_ids"] == 500 and cfg["missing_gt"] == "error"
    assert cfg["synonyms"]["sha256"] == "b685537b36fe21b791c87151b96a991ceb582edff19f3da204dcc7a7905502f2"
    assert cfg["nltk_version"].startswith("3.") and cfg["singularizer"] is None
    out = res.to_json()
    assert set(out) == {"config", "overall_metrics", "warnings", "sentences"}
    assert "config" not in out["overall_metrics"] and out["overall_metrics"]["CHAIRs"] == 0.316


def test_image_list_mismatch_is_error(chair_golden_dir):
    with pytest.raises(ValueError, match="do not match image list"):
        score_caption_file(chair_golden_dir / "minigpt4/greedy.jsonl", gt=toy_gt(),
                           image_list=shared_path("data/chair/chair500_opera_instructblip.txt"))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    chair_cli.register(parser.add_subparsers(dest="metric", required=True))
    return parser


def test_cli_chair_on_toy(tmp_path):
    gt_file = tmp_path / "toy_gt.json"
    gt_file.write_text(json.dumps({str(k): sorted(v) for k, v in toy_gt().objects.items()}))
    caps = tmp_path / "caps.jsonl"
    caps.write_text("".join(json.dumps({"id": i, "text": c}) + "\n" for i, c in TOY))
    out = tmp_path / "details" / "chair.json"
    args = _parser().parse_args(["chair", "--captions", str(caps), "--gt", str(gt_file), "--image-id-key", "id",
                                 "--caption-key", "text", "--out", str(out), "--dialect", "original"])
    summary = args.func(args)
    assert summary["CHAIRi"] == 2 / 7 and summary["config"]["dialect"] == "original"
    assert summary["config"]["gt_cache"]["name"] == "toy_gt.json" and summary["config"]["preset"] is None
    details = json.loads(out.read_text())
    assert details["overall_metrics"]["Len"] == 0.09999999999999999
    assert [s["image_id"] for s in details["sentences"]] == [1, 2, 3]
    assert set(details["sentences"][0]) >= {"image_id", "caption", "mscoco_hallucinated_words", "mscoco_gt_words",
                                            "mscoco_generated_words", "hallucination_idxs", "words", "metrics"}


def test_score_module_prints_one_json_line(capsys):
    from vh_bench import score

    log = shared_path("data/chair/golden/opera/minigpt4/greedy.jsonl")
    assert score.main(["chair", "--captions", str(log)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["CHAIRs"] == 0.318 and summary["config"]["preset"] == "opera"


def test_score_module_error_is_one_line(tmp_path, capsys):
    from vh_bench import score

    assert score.main(["chair", "--captions", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: caption file not found") and "\n" not in err


def test_result_type():
    assert isinstance(evaluate_chair(TOY[:1], toy_gt()), ChairResult)
