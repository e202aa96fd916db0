"""Numbers that cannot mislead: POPE parser disagreements, mostly-unparseable runs, OPOPE's object
source and F-β, and degenerate inputs (empty, all failed) that must stop the scorers with one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.metrics.test_opope import WORKED_CAPTIONS, WORKED_IMAGES
from vh_bench.data.captioning import OpopeOptions, score_captions
from vh_bench.errors import ConfigError
from vh_bench.metrics.opope import evaluate
from vh_bench.metrics.pope import (
    MatchedAnswers,
    PopeInputError,
    PopeQuestion,
    clear_reading,
    compute_metrics,
    pope_intervals,
    score_matched,
)
from vh_bench.score import main as score_main

# A perfect model that writes its "no" in capitals or with "!": the official parser reads yes.
PERFECT_BUT_LOUD = [("yes", "Yes"), ("no", "NO."), ("yes", "Yes."), ("no", "No!"), ("yes", "yes"), ("no", "no\nThere is a cat.")]


def test_clear_reading_of_the_tricky_answers() -> None:
    assert [clear_reading(a) for _, a in PERFECT_BUT_LOUD] == ["yes", "no", "yes", "no", "yes", "no"]
    assert clear_reading("Yes, but no cat.") is None and clear_reading("") is None


def test_parser_disagreements_are_counted_and_warned() -> None:
    m = compute_metrics(PERFECT_BUT_LOUD, "official")
    d = m.as_dict()
    # What the issue measured: F1 0.667 of a perfect model, with nothing unparseable.
    assert (d["TP"], d["FP"], d["TN"], d["FN"]) == (3, 3, 0, 0)
    assert d["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5, abs=1e-12)
    assert d["n_unparseable"] == 0
    assert d["n_parser_disagree"] == 3  # "NO.", "No!", "no\nThere…" all read as yes
    assert not d["mostly_unparseable"]
    (line,) = m.warnings("official", "coco v3 random")
    assert "3 of 6 answers read differently by parser 'official'" in line
    # The OPERA parser reads "NO." as no: only "No!" and the newline case remain.
    assert compute_metrics(PERFECT_BUT_LOUD, "opera").n_parser_disagree == 2


def test_mostly_unparseable_run_is_flagged() -> None:
    pairs = [("yes", "tiny words cat"), ("no", "dog bus"), ("yes", "Yes"), ("no", "")]
    m = compute_metrics(pairs, "official")
    assert m.n_unparseable == 3 and m.mostly_unparseable
    assert any("3 of 4 answers show no clear yes/no" in w for w in m.warnings("official"))
    assert not compute_metrics(pairs[:2] + [("yes", "Yes"), ("no", "No")], "official").mostly_unparseable


def test_pope_intervals_are_over_images_and_match_the_metric() -> None:
    qs = [PopeQuestion(i, f"img{i // 2}.jpg", "Is there a cat?", "yes" if i % 2 else "no") for i in range(12)]
    answers = ["Yes" if i % 3 else "No" for i in range(12)]
    matched = MatchedAnswers(tuple(zip(qs, answers)), 0, 0, ())
    ci, units = pope_intervals(matched)
    m = score_matched(matched).as_dict()
    assert units.unit == "image" and len(units) == 6 and units.columns["n"] == [2] * 6
    assert ci["f1"]["estimate"] == m["f1"] and ci["accuracy"]["estimate"] == m["accuracy"]
    assert ci["f1"]["low"] <= m["f1"] <= ci["f1"]["high"]


def test_all_failed_or_no_answers_is_an_error() -> None:
    with pytest.raises(PopeInputError, match="all 3 answers are failed samples"):
        score_matched(MatchedAnswers((), 0, 3, ()))
    with pytest.raises(PopeInputError, match="no answers"):
        score_matched(MatchedAnswers((), 5, 0, ()))


def test_opope_beta_and_intervals_on_the_worked_example() -> None:
    out = evaluate(WORKED_CAPTIONS, WORKED_IMAGES, splits=("popular",), beta=0.5)
    s = out["splits"]["popular"]
    p, r = 0.8, 4 / 9  # §4.5
    assert out["beta"] == 0.5 and out["objects_source"] == "pope_segmentation"
    assert s["f1"] == pytest.approx(2 * p * r / (p + r), abs=1e-12)
    assert s["f_beta"] == pytest.approx(1.25 * p * r / (0.25 * p + r), abs=1e-12)
    assert s["ci"]["f_beta"]["estimate"] == pytest.approx(s["f_beta"], abs=1e-12)
    assert s["ci"]["f1"]["estimate"] == pytest.approx(s["f1"], abs=1e-12)
    units = out["units"]["popular"]
    assert units["ids"] == ["1", "2", "3"] and units["columns"]["tp"] == [1, 2, 1]
    with pytest.raises(ValueError, match="beta"):
        evaluate(WORKED_CAPTIONS, WORKED_IMAGES, beta=0.0)
    with pytest.raises(ValueError, match="no captions"):
        evaluate({}, WORKED_IMAGES)


def test_opope_options_are_checked_with_the_config_key(tmp_path: Path) -> None:
    assert OpopeOptions.parse(True) == OpopeOptions() and not OpopeOptions.parse(False).enabled
    with pytest.raises(ConfigError, match="dataset.opope.segmentation_file"):
        OpopeOptions.parse({"objects": "pope_segmentation"}).check()
    with pytest.raises(ConfigError, match="dataset.opope.objects"):
        OpopeOptions.parse({"objects": "coco"}).check()
    with pytest.raises(ConfigError, match="dataset.opope.beta"):
        OpopeOptions.parse({"beta": -1}).check()
    with pytest.raises(ConfigError, match="dataset.opope.nope"):
        OpopeOptions.parse({"nope": 1})
    seg = tmp_path / "seg.jsonl"
    seg.write_text("".join(json.dumps({"image": im.image, "objects": list(im.objects)}) + "\n" for im in WORKED_IMAGES))
    OpopeOptions.parse({"objects": "pope_segmentation", "segmentation_file": str(seg)}).check()


def test_captioning_scorer_refuses_a_run_whose_samples_all_failed() -> None:
    rows = [{"sample_id": f"demo:{i}", "image_id": i, "text": "", "error": "corrupt image"} for i in range(3)]
    with pytest.raises(ValueError, match="all 3 samples failed"):
        score_captions(rows, None, dialect="opera", missing_gt="error", synonyms=None, opope=True)  # type: ignore[arg-type]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = score_main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


@pytest.mark.parametrize("content, why", [("", "no caption lines"),
                                          ('{"image_id": 1, "caption": "", "error": "boom"}\n', "all 1 lines are failed samples")])  # fmt: skip
def test_scorers_exit_non_zero_with_one_line_on_empty_or_failed_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, why: str
) -> None:
    caps = tmp_path / "captions.jsonl"
    caps.write_text(content)
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"1": ["cat"]}))
    for argv in (["chair", "--captions", str(caps), "--gt", str(gt)], ["opope", "--captions", str(caps), "--gt", str(gt)]):
        rc, err = _run(argv, capsys)
        assert rc == 2 and len(err.splitlines()) == 1 and why in err, (argv, err)


def test_pope_cli_exits_on_all_failed_answers_and_warns_on_disagreement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    q = tmp_path / "questions.jsonl"
    q.write_text("".join(json.dumps({"question_id": i + 1, "image": f"im{i // 2}.jpg", "text": "Is there a cat?", "label": lab}) + "\n"
                         for i, (lab, _) in enumerate(PERFECT_BUT_LOUD)))  # fmt: skip
    failed = tmp_path / "failed.jsonl"
    failed.write_text("".join(json.dumps({"question_id": i + 1, "answer": "", "error": "OOM"}) + "\n" for i in range(6)))
    rc, err = _run(["pope", "--questions", str(q), "--answers", str(failed)], capsys)
    assert rc == 2 and len(err.splitlines()) == 1 and "all 6 answers are failed samples" in err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc, err = _run(["pope", "--questions", str(q), "--answers", str(empty)], capsys)
    assert rc == 2 and "no answers in the file" in err
    loud = tmp_path / "loud.jsonl"
    loud.write_text("".join(json.dumps({"question_id": i + 1, "answer": a}) + "\n" for i, (_, a) in enumerate(PERFECT_BUT_LOUD)))
    assert score_main(["pope", "--questions", str(q), "--answers", str(loud)]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out.strip().splitlines()[-1])
    assert out["n_parser_disagree"] == 3 and "warning:" in cap.err and "read differently" in cap.err
    assert out["ci"]["f1"]["estimate"] == out["f1"] and out["ci"]["f1"]["unit"] == "image"
