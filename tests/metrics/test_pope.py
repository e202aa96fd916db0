"""POPE metric tests: metrics.md §6 items 12-16 (files, parsers, toy, matching, aggregation)."""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

import pytest

from tests.shared_data import shared_path
from vh_bench.metrics import pope
from vh_bench.metrics.pope import (
    PopeAnswer,
    PopeInputError,
    PopeMetrics,
    PopeQuestion,
    aggregate_splits,
    compute_metrics,
    evaluate_files,
    is_unparseable,
    load_answers,
    load_questions,
    match_answers,
    parse_answer,
    parse_official,
    yorn_extract,
)

TOL = 1e-9

# metrics.md §3.6, row by row:
# (answer, official, opera, vcd label yes, vcd label no, lmms_exact, vlmevalkit_yorn, unparseable)
EDGE_CASES = [
    ("Yes", "yes", "yes", "yes", "yes", "yes", "Yes", False),
    ("No.", "no", "no", "no", "no", "other", "No", False),
    ("NO", "yes", "no", "no", "no", "no", "No", False),
    ("No!", "yes", "yes", "no", "no", "other", "No", False),
    ("no\nThere is a cat.", "yes", "yes", "no", "no", "other", "No", False),
    ("I don't see a dog.", "yes", "no", "no", "yes", "other", "Unknown", True),
    ("Not sure.", "yes", "yes", "no", "no", "other", "Unknown", False),
    ("There is a dog. No cat.", "yes", "no", "no", "no", "other", "No", False),
    ("There is no dog in the image.", "no", "no", "no", "no", "other", "No", False),
    ("Yes, but no cat.", "no", "no", "yes", "no", "other", "Unknown", True),
    ("I know there is a dog.", "yes", "yes", "no", "no", "other", "Unknown", True),
    ("", "yes", "yes", "no", "yes", "other", "Unknown", True),
    ("Yes.", "yes", "yes", "yes", "yes", "other", "Yes", False),
]

# metrics.md §3.8: (label, answer)
TOY = [
    ("yes", "Yes"),
    ("no", "No"),
    ("yes", "Yes, there is a dog."),
    ("no", "There is no car in the image."),
    ("yes", "No."),
    ("no", "NO"),
    ("yes", "I don't see a bench."),
    ("no", "Not sure."),
    ("yes", ""),
    ("no", "No, there is not."),
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def write_array(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records, indent=4))
    return path


def toy_questions() -> list[dict]:
    return [
        {"question_id": i, "image": f"COCO_val2014_{i:012d}.jpg", "text": "Is there a dog in the image?", "label": lab}
        for i, (lab, _) in enumerate(TOY, 1)
    ]


def toy_answers() -> list[dict]:
    return [{"question_id": i, "text": ans} for i, (_, ans) in enumerate(TOY, 1)]


# ------------------------------------------------------------------------------ parsers (§6 item 13)


@pytest.mark.parametrize("row", EDGE_CASES, ids=[repr(r[0]) for r in EDGE_CASES])
def test_edge_case_table(row):
    answer, official, opera, vcd_yes, vcd_no, lmms, yorn, unparseable = row
    assert parse_answer(answer, "official") == official
    assert parse_answer(answer, "opera") == opera
    assert parse_answer(answer, "vcd_asymmetric", label="yes") == vcd_yes
    assert parse_answer(answer, "vcd_asymmetric", label="no") == vcd_no
    assert parse_answer(answer, "lmms_exact") == lmms
    assert yorn_extract(answer) == yorn
    assert parse_answer(answer, "vlmevalkit_yorn") == {"Yes": "yes", "No": "no", "Unknown": "other"}[yorn]
    assert is_unparseable(answer) is unparseable


def test_official_rules_before_stripping():
    # §6 item 13: a raw newline is not a separator; a leading space gives an empty word and "No".
    assert parse_official("No\n") == "yes"
    assert parse_official(" No") == "no"
    assert parse_official("not") == "no" and parse_official("Not") == "yes"  # case-sensitive
    assert parse_official("No,") == "no"  # commas deleted
    assert parse_official("yes.no") == "yes"  # only the part before the first period
    assert parse_official("yes\tno") == "yes"  # tabs do not separate


def test_answers_are_stripped_before_parsing(tmp_path):
    # §3.2: parsers consume the stripped text, so a file's "No\n" scores as no.
    qs = write_jsonl(tmp_path / "q.jsonl", toy_questions()[:1])
    ans = write_jsonl(tmp_path / "a.jsonl", [{"question_id": 1, "text": "No\n"}])
    _, answers, m = evaluate_files(qs, ans)
    assert answers.answers[0].text == "No"
    assert (m.tp, m.fn) == (0, 1)


def test_alternative_parser_rules():
    assert parse_answer("It isn't there", "opera") == "no"  # n't
    assert parse_answer("NO.", "opera") == "no"
    assert parse_answer("  YES ", "lmms_exact") == "yes"
    assert parse_answer("nope", "vcd_asymmetric", label="no") == "no"  # substring "no"
    assert parse_answer("yesterday", "vcd_asymmetric", label="yes") == "yes"
    assert yorn_extract("(yes)") == "Yes"
    assert yorn_extract("yes/no") == "Unknown"  # "/" becomes a space: both words
    assert yorn_extract("Yes, 1,000 dogs") == "Yes"  # digit-comma-digit: commas deleted
    assert yorn_extract("it's a no") == "No"  # apostrophes untouched


def test_yorn_hyphen_and_period_limit():
    assert yorn_extract("no-one") == "No"
    # Only 32 lone periods are deleted (the reference passes re.UNICODE as the count).
    assert yorn_extract("x. " * 31 + "no.") == "No"
    assert yorn_extract("x. " * 32 + "no.") == "Unknown"


def test_unknown_parser_is_an_error():
    with pytest.raises(ValueError, match="unknown POPE parser"):
        parse_answer("Yes", "lenient")


# ------------------------------------------------------------------------------ toy (§6 item 14)


@pytest.mark.parametrize(
    "parser, expected",
    [
        ("official", (4, 2, 3, 1, 0.7, 0.6666666666666666, 0.8, 0.7272727272727272, 0.6)),
        ("opera", (3, 1, 4, 2, 0.7, 0.75, 0.6, 0.6666666666666665, 0.4)),
    ],
)
def test_toy_example(parser, expected):
    d = compute_metrics(TOY, parser).as_dict()
    tp, fp, tn, fn, acc, prec, rec, f1, yes_ratio = expected
    assert (d["TP"], d["FP"], d["TN"], d["FN"], d["n"]) == (tp, fp, tn, fn, 10)
    for key, value in zip(("accuracy", "precision", "recall", "f1", "yes_ratio"), (acc, prec, rec, f1, yes_ratio)):
        assert d[key] == pytest.approx(value, abs=TOL), key
    assert d["n_empty"] == 1
    assert d["n_unparseable"] == 2


def test_toy_through_files(tmp_path):
    qs = write_jsonl(tmp_path / "q.jsonl", toy_questions())
    ans = write_jsonl(tmp_path / "a.jsonl", toy_answers())
    _, _, m = evaluate_files(qs, ans, parser="official")
    assert (m.tp, m.fp, m.tn, m.fn) == (4, 2, 3, 1)


def test_lmms_exact_drops_other_and_reports_prediction_yes_ratio():
    pairs = [("yes", "yes"), ("yes", "Yes."), ("no", "no"), ("no", "No."), ("yes", "no"), ("no", "maybe")]
    d = compute_metrics(pairs, "lmms_exact").as_dict()
    assert (d["TP"], d["FP"], d["TN"], d["FN"], d["n_other"]) == (1, 0, 1, 1, 3)
    assert d["accuracy"] == pytest.approx(2 / 6, abs=TOL)
    assert d["precision"] == pytest.approx(1.0, abs=TOL)
    assert d["recall"] == pytest.approx(0.5, abs=TOL)
    # From predictions (1 exact yes of 6), never lmms-eval's label-based 0.5 (§3.5, §6 item 16).
    assert d["yes_ratio"] == pytest.approx(1 / 6, abs=TOL)


def test_vlmevalkit_unknown_is_wrong_and_not_yes():
    pairs = [("yes", "Yes"), ("yes", "maybe"), ("no", "maybe"), ("no", "No")]
    d = compute_metrics(pairs, "vlmevalkit_yorn").as_dict()
    assert (d["TP"], d["FP"], d["TN"], d["FN"], d["n_other"]) == (1, 0, 1, 1, 2)
    assert d["accuracy"] == pytest.approx(0.5, abs=TOL)
    assert d["recall"] == pytest.approx(0.5, abs=TOL)  # the label-yes "Unknown" is a miss


def test_zero_denominators_give_zero_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="vh_bench.metrics.pope"):
        d = compute_metrics([("no", "No"), ("yes", "No")], "official").as_dict()
    assert d["precision"] == 0.0 and d["recall"] == 0.0 and d["f1"] == 0.0
    assert "precision" in caplog.text and "F1" in caplog.text
    assert PopeMetrics().as_dict()["accuracy"] == 0.0


def test_label_must_be_yes_or_no():
    with pytest.raises(ValueError, match="label"):
        compute_metrics([("Yes", "Yes")])


# ------------------------------------------------------------------------------ matching (§6 item 15)


def _answers(ids_texts):
    return [PopeAnswer(i, t, f"row {k}") for k, (i, t) in enumerate(ids_texts, 1)]


QUESTIONS = [PopeQuestion(i, "img.jpg", "Is there a dog in the image?", lab) for i, (lab, _) in enumerate(TOY, 1)]


def test_unknown_id_raises():
    with pytest.raises(PopeInputError, match="row 1: question_id 99 is not in"):
        match_answers(QUESTIONS, _answers([(99, "Yes")]), allow_missing=True)


def test_duplicate_answer_raises():
    with pytest.raises(PopeInputError, match=r"row 2: question_id 3 answered twice \(first at row 1\)"):
        match_answers(QUESTIONS, _answers([(3, "Yes"), (3, "No")]), allow_missing=True)


def test_missing_answer_raises_unless_allowed():
    some = _answers([(i, a) for i, (_, a) in enumerate(TOY, 1) if i not in (5, 6)])
    with pytest.raises(PopeInputError, match=r"2 of 10 questions .* no answer \(question_id 5, 6\)"):
        match_answers(QUESTIONS, some)
    matched = match_answers(QUESTIONS, some, allow_missing=True)
    assert matched.n_missing == 2 and matched.missing_ids == (5, 6)
    m = pope.score_matched(matched)
    # Toy without pairs 5 (FN) and 6 (FP): the answered subset only.
    assert (m.n, m.tp, m.fp, m.tn, m.fn, m.n_missing) == (8, 4, 1, 3, 0, 2)


def test_error_rows_are_unanswered_not_missing():
    ans = _answers([(i, a) for i, (_, a) in enumerate(TOY, 1)])
    ans[0] = PopeAnswer(1, "", "row 1", error="image missing")
    matched = match_answers(QUESTIONS, ans)
    assert matched.n_errors == 1 and matched.n_missing == 0 and len(matched.pairs) == 9


def test_shuffled_answers_give_identical_results(tmp_path):
    qs = write_jsonl(tmp_path / "q.jsonl", toy_questions())
    ordered = write_jsonl(tmp_path / "a1.jsonl", toy_answers())
    shuffled_records = toy_answers()
    random.Random(3).shuffle(shuffled_records)
    assert shuffled_records != toy_answers()
    shuffled = write_array(tmp_path / "a2.json", shuffled_records)  # and as a JSON array
    for parser in pope.PARSERS:
        assert evaluate_files(qs, ordered, parser=parser)[2] == evaluate_files(qs, shuffled, parser=parser)[2]


def test_answer_keys(tmp_path):
    both = write_jsonl(tmp_path / "a.jsonl", [{"question_id": "7", "answer": "No", "text": "prompt text"}])
    assert load_answers(both).answers[0].text == "No"  # `answer` preferred, decimal-string id accepted
    assert load_answers(both).answers[0].question_id == 7
    assert load_answers(both, answer_key="text").answers[0].text == "prompt text"
    bad = write_jsonl(tmp_path / "b.jsonl", [{"question_id": 1, "text": "Yes"}, {"question_id": 2, "reply": "No"}])
    with pytest.raises(PopeInputError, match=r"b\.jsonl:2: no 'answer' or 'text' key"):
        load_answers(bad)


# ------------------------------------------------------------------------------ files and formats


def test_jsonl_and_json_array_load_identically(tmp_path):
    recs = toy_questions()
    a = load_questions(write_jsonl(tmp_path / "q.jsonl", recs))
    b = load_questions(write_array(tmp_path / "q.json", recs))
    assert (a.format, b.format) == ("jsonl", "json")
    assert a.questions == b.questions
    # leading whitespace before "[" still means an array; blank lines in JSONL are ignored
    c = tmp_path / "c.json"
    c.write_text("\n  \n" + json.dumps(recs))
    assert load_questions(c).questions == a.questions
    d = tmp_path / "d.jsonl"
    d.write_text("\n\n".join(json.dumps(r) for r in recs) + "\n\n")
    assert load_questions(d).questions == a.questions


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"label": "Yes"}, "label must be exactly 'yes' or 'no', got 'Yes'"),
        ({"question_id": "3"}, "question_id must be an integer"),
        ({"question_id": True}, "question_id must be an integer"),
        ({"image": ""}, "image must be a non-empty string"),
        ({"text": None}, "text must be a string"),
        ({"question_id": 1}, r"duplicate question_id 1 \(first at .*q\.jsonl?:[12]\)"),
    ],
)
def test_question_validation_names_file_and_line(tmp_path, bad, message):
    recs = toy_questions()
    recs[3] = {**recs[3], **bad}
    jsonl = write_jsonl(tmp_path / "q.jsonl", recs)
    with pytest.raises(PopeInputError, match=rf"q\.jsonl:4: {message}"):
        load_questions(jsonl)
    array = write_array(tmp_path / "q.json", recs)  # indent=4: element k starts on line 6(k-1)+2
    with pytest.raises(PopeInputError, match=rf"q\.json:20: {message}"):
        load_questions(array)


def test_malformed_json_names_the_line(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text(json.dumps(toy_questions()[0]) + "\n{not json\n")
    with pytest.raises(PopeInputError, match=r"q\.jsonl:2: invalid JSON"):
        load_questions(p)
    missing = tmp_path / "m.jsonl"
    missing.write_text(json.dumps({"question_id": 1, "image": "a.jpg"}) + "\n")
    with pytest.raises(PopeInputError, match=r"m\.jsonl:1: missing key\(s\) text, label"):
        load_questions(missing)
    arr = tmp_path / "a.json"
    arr.write_text("[\n" + json.dumps(toy_questions()[0]) + "\n" + json.dumps(toy_questions()[1]) + "\n]")
    with pytest.raises(PopeInputError, match=r"a\.json:3: expected ',' or ']'"):
        load_questions(arr)
    empty = tmp_path / "e.json"
    empty.write_text("[]")
    with pytest.raises(PopeInputError, match="no questions"):
        load_questions(empty)


def test_version_detection_without_shipped_hash(tmp_path):
    recs = toy_questions()
    v3ish = load_questions(write_jsonl(tmp_path / "x_random.jsonl", recs))
    assert v3ish.shipped is None and v3ish.detected_version("coco") is None
    assert v3ish.detected_split() == "random"
    recs[0]["text"] = "Is there an apple in the imange?"
    v1ish = load_questions(write_jsonl(tmp_path / "y.jsonl", recs))
    assert v1ish.detected_version("coco") == "v1"
    assert v1ish.detected_version("gqa") is None


# ------------------------------------------------------------------------------ aggregation (§6 item 16)


def test_split_mean_versus_pooled_with_unequal_sizes():
    per_split = {
        # 4 questions, like v1 random being shorter: TP 1, FN 1, TN 1, FP 1
        "random": compute_metrics([("yes", "Yes"), ("yes", "No"), ("no", "No"), ("no", "Yes")]),
        "popular": compute_metrics([("yes", "Yes")] * 3 + [("no", "No")] * 3),  # all right
        "adversarial": compute_metrics([("yes", "Yes")] * 3 + [("no", "Yes")] * 3),  # always yes
    }
    agg = aggregate_splits(per_split)
    assert agg["splits"]["adversarial"]["f1"] == pytest.approx(2 / 3, abs=TOL)
    mean = agg["mean"]
    assert mean["accuracy"] == pytest.approx((0.5 + 1.0 + 0.5) / 3, abs=TOL)
    assert mean["precision"] == pytest.approx((0.5 + 1.0 + 0.5) / 3, abs=TOL)
    assert mean["recall"] == pytest.approx((0.5 + 1.0 + 1.0) / 3, abs=TOL)
    assert mean["f1"] == pytest.approx((0.5 + 1.0 + 2 / 3) / 3, abs=TOL)
    assert mean["yes_ratio"] == pytest.approx((0.5 + 0.5 + 1.0) / 3, abs=TOL)
    pooled = agg["pooled"]
    assert (pooled["n"], pooled["TP"], pooled["FP"], pooled["TN"], pooled["FN"]) == (16, 7, 4, 4, 1)
    assert pooled["accuracy"] == pytest.approx(11 / 16, abs=TOL)
    assert pooled["precision"] == pytest.approx(7 / 11, abs=TOL)
    assert pooled["recall"] == pytest.approx(7 / 8, abs=TOL)
    p, r = 7 / 11, 7 / 8
    assert pooled["f1"] == pytest.approx(2 * p * r / (p + r), abs=TOL)
    assert pooled["yes_ratio"] == pytest.approx(11 / 16, abs=TOL)
    assert pooled["accuracy"] != pytest.approx(mean["accuracy"], abs=1e-3)  # unequal sizes: they differ


# ------------------------------------------------------------------------------ CLI


def _cli(argv: list[str]) -> dict:
    from vh_bench.metrics import pope_cli

    parser = argparse.ArgumentParser()
    pope_cli.register(parser.add_subparsers(dest="metric", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_single_file(tmp_path):
    qs = write_jsonl(tmp_path / "q.jsonl", toy_questions())
    llava = [{"question_id": i, "prompt": "p", "text": t, "answer_id": "x", "model_id": "m"} for i, (_, t) in enumerate(TOY, 1)]
    ans = write_jsonl(tmp_path / "a.jsonl", llava)
    out = _cli(["pope", "--answers", str(ans), "--questions", str(qs), "--parser", "opera"])
    assert (out["metric"], out["parser"], out["TP"], out["FP"], out["TN"], out["FN"]) == ("pope", "opera", 3, 1, 4, 2)
    assert out["questions_sha256"] == pope.file_sha256(qs) and out["answers_sha256"] == pope.file_sha256(ans)
    assert out["f1"] == pytest.approx(0.6666666666666665, abs=TOL)
    json.dumps(out)  # one JSON line


def test_cli_missing_answers(tmp_path):
    qs = write_jsonl(tmp_path / "q.jsonl", toy_questions())
    ans = write_jsonl(tmp_path / "a.jsonl", toy_answers()[:-1])
    with pytest.raises(PopeInputError, match="--allow-missing"):
        _cli(["pope", "--answers", str(ans), "--questions", str(qs)])
    out = _cli(["pope", "--answers", str(ans), "--questions", str(qs), "--allow-missing"])
    assert out["n_missing"] == 1 and out["n"] == 9


def test_cli_several_splits(tmp_path):
    files = []
    for split in ("random", "popular"):
        files.append((write_jsonl(tmp_path / f"q_{split}.jsonl", toy_questions()), write_jsonl(tmp_path / f"a_{split}.jsonl", toy_answers())))
    out = _cli(["pope", "--questions", *[str(q) for q, _ in files], "--answers", *[str(a) for _, a in files]])
    assert set(out["splits"]) == {"random", "popular"}
    assert out["pooled"]["TP"] == 8
    assert out["mean"]["f1"] == pytest.approx(0.7272727272727272, abs=TOL)
    with pytest.raises(ValueError, match="one answer file per question file"):
        _cli(["pope", "--questions", str(files[0][0]), "--answers", str(files[0][1]), str(files[1][1])])


def test_score_module_runs_pope(tmp_path, capsys):
    pytest.importorskip("vh_bench.metrics.chair_cli")
    from vh_bench import score

    qs = write_jsonl(tmp_path / "q.jsonl", toy_questions())
    ans = write_jsonl(tmp_path / "a.jsonl", toy_answers())
    assert score.main(["pope", "--answers", str(ans), "--questions", str(qs)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["TP"], out["FP"], out["TN"], out["FN"]) == (4, 2, 3, 1)


# ------------------------------------------------------------------------------ shipped files (§6 item 12)

# (relative path, format, questions, yes, no, images, "imange" typos, source, version, split)
SHIPPED = [
    ("coco/v3/coco_pope_random.json", "jsonl", 3000, 1500, 1500, 500, 0, "coco", "v3", "random"),
    ("coco/v3/coco_pope_popular.json", "jsonl", 3000, 1500, 1500, 500, 0, "coco", "v3", "popular"),
    ("coco/v3/coco_pope_adversarial.json", "jsonl", 3000, 1500, 1500, 500, 0, "coco", "v3", "adversarial"),
    ("coco/v1/coco_pope_random.json", "jsonl", 2910, 1500, 1410, 500, 144, "coco", "v1", "random"),
    ("coco/v1/coco_pope_popular.json", "jsonl", 3000, 1500, 1500, 500, 44, "coco", "v1", "popular"),
    ("coco/v1/coco_pope_adversarial.json", "jsonl", 3000, 1500, 1500, 500, 58, "coco", "v1", "adversarial"),
    ("aokvqa/aokvqa_pope_seem_random.json", "json", 3000, 1500, 1500, 500, 0, "aokvqa", "seem", "random"),
    ("aokvqa/aokvqa_pope_seem_popular.json", "json", 3000, 1500, 1500, 500, 0, "aokvqa", "seem", "popular"),
    ("aokvqa/aokvqa_pope_seem_adversarial.json", "json", 3000, 1500, 1500, 500, 0, "aokvqa", "seem", "adversarial"),
    ("gqa/gqa_pope_seem_random.json", "json", 3000, 1500, 1500, 500, 0, "gqa", "seem", "random"),
    ("gqa/gqa_pope_seem_popular.json", "json", 3000, 1500, 1500, 500, 0, "gqa", "seem", "popular"),
    ("gqa/gqa_pope_seem_adversarial.json", "json", 3000, 1500, 1500, 500, 0, "gqa", "seem", "adversarial"),
]


@pytest.mark.shared
@pytest.mark.parametrize("row", SHIPPED, ids=[r[0] for r in SHIPPED])
def test_shipped_question_files(row):
    rel, fmt, n, n_yes, n_no, n_images, typos, source, version, split = row
    qs = load_questions(shared_path(f"data/pope/{rel}"))
    assert qs.format == fmt
    assert (len(qs.questions), qs.n_yes, qs.n_no, len(qs.images)) == (n, n_yes, n_no, n_images)
    ids = [q.question_id for q in qs.questions]
    assert ids == list(range(1, n + 1))  # unique, 1..n
    assert sum("imange" in q.text for q in qs.questions) == typos
    assert qs.shipped is not None and (qs.shipped.source, qs.shipped.version, qs.shipped.split) == (source, version, split)
    assert qs.detected_version(source) == version
    prefix = "COCO_val2014_" if source != "gqa" else ""
    assert all(q.image.startswith(prefix) and q.image.endswith(".jpg") for q in qs.questions)


@pytest.mark.shared
def test_v1_versus_v3():
    root = "data/pope/coco"
    v3 = {s: load_questions(shared_path(f"{root}/v3/coco_pope_{s}.json")) for s in pope.SPLITS}
    v1 = {s: load_questions(shared_path(f"{root}/v1/coco_pope_{s}.json")) for s in pope.SPLITS}
    images = set(v3["random"].images)
    for s in pope.SPLITS:
        assert set(v1[s].images) == set(v3[s].images) == images  # the same 500 images everywhere
        positives = [{(q.image, q.text.replace("imange", "image")) for q in v.questions if q.label == "yes"} for v in (v1[s], v3[s])]
        assert positives[0] == positives[1] and len(positives[0]) == 1500
    # v1 popular/adversarial: same ids and questions as v3 apart from the typo
    for s in ("popular", "adversarial"):
        fixed = [(q.question_id, q.image, q.text.replace("imange", "image"), q.label) for q in v1[s].questions]
        assert fixed == [(q.question_id, q.image, q.text, q.label) for q in v3[s].questions]
    # v1 random: identical positives, its 1,410 negatives all in v3, 90 missing
    key = lambda q: (q.image, q.text.replace("imange", "image"), q.label)  # noqa: E731
    v1r, v3r = {key(q) for q in v1["random"].questions}, {key(q) for q in v3["random"].questions}
    assert v1r <= v3r and len(v3r - v1r) == 90
    assert {k for k in v3r - v1r if k[2] == "yes"} == set()
    per_image: dict[str, int] = {}
    for q in v1["random"].questions:
        per_image[q.image] = per_image.get(q.image, 0) + 1
    sizes = sorted(per_image.values())
    assert (sizes.count(6), sizes.count(5), sizes.count(4)) == (416, 78, 6)


@pytest.mark.shared
def test_repeated_questions_and_overlap():
    aok = load_questions(shared_path("data/pope/aokvqa/aokvqa_pope_seem_adversarial.json"))
    gqa = load_questions(shared_path("data/pope/gqa/gqa_pope_seem_adversarial.json"))
    for qs, (a, b) in ((aok, (1952, 1954)), (gqa, (2564, 2566))):
        by_id = {q.question_id: q for q in qs.questions}
        assert (by_id[a].image, by_id[a].text) == (by_id[b].image, by_id[b].text)
        assert by_id[a].label == by_id[b].label == "no"
    coco = load_questions(shared_path("data/pope/coco/v3/coco_pope_random.json"))
    assert len(set(aok.images) & set(coco.images)) == 11


def test_metrics_do_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, vh_bench.metrics.pope, vh_bench.metrics.opope, vh_bench.metrics.pope_cli, vh_bench.data.pope_gen; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
