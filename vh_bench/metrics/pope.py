"""POPE: question files, answer matching, the yes/no parsers and the metrics (metrics.md §3).

Rates are fractions in [0, 1]; counts are always reported next to them (§0). Answers are matched
to questions by `question_id`, never by position (§3.3). No torch here.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from vh_bench.store import file_sha256

log = logging.getLogger(__name__)

SOURCES: tuple[str, ...] = ("coco", "aokvqa", "gqa")
SPLITS: tuple[str, ...] = ("random", "popular", "adversarial")
# Versions each source ships (§3.1); the first is the default.
VERSIONS: dict[str, tuple[str, ...]] = {"coco": ("v3", "v1"), "aokvqa": ("seem",), "gqa": ("seem",)}
LABELS: tuple[str, ...] = ("yes", "no")

# metrics.md §3.2: prompt suffix presets appended to the question text.
SUFFIX_PRESETS: dict[str, str] = {
    "llava": "\nAnswer the question using a single word or phrase.",
    "vcd": " Please answer this question with one word.",
    "none": "",
}

RATE_KEYS: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "yes_ratio")


class PopeInputError(ValueError):
    """A question or answer file is malformed, or answers do not match questions."""


# --------------------------------------------------------------------------------------------
# Reading JSON / JSONL with line numbers
# --------------------------------------------------------------------------------------------


def _parse_json_array(text: str, path: Path | str) -> list[tuple[int, Any]]:
    """Elements of one JSON array, each with the line it starts on (for error messages)."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")
    items: list[tuple[int, Any]] = []
    line, counted = 1, 0

    def line_at(pos: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, pos)
        counted = pos
        return line

    i = ws.match(text, 0).end() + 1  # just past "["
    i = ws.match(text, i).end()
    if text.startswith("]", i):
        i += 1
    else:
        while True:
            i = ws.match(text, i).end()
            try:
                obj, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise PopeInputError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
            items.append((line_at(i), obj))
            i = ws.match(text, end).end()
            if text.startswith(",", i):
                i += 1
            elif text.startswith("]", i):
                i += 1
                break
            else:
                raise PopeInputError(f"{path}:{line_at(i)}: expected ',' or ']' in the JSON array")
    if text[i:].strip():
        raise PopeInputError(f"{path}:{line_at(ws.match(text, i).end())}: extra data after the JSON array")
    return items


def read_json_records(path: Path | str) -> tuple[str, list[tuple[int, Any]]]:
    """(format, [(line, record)]): a JSON array if the first non-space char is `[`, else JSONL (§3.1)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    if text.lstrip().startswith("["):
        return "json", _parse_json_array(text, path)
    records: list[tuple[int, Any]] = []
    for line_no, line in enumerate(text.split("\n"), 1):  # not splitlines(): U+2028 may sit in strings
        if not line.strip():
            continue
        try:
            records.append((line_no, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise PopeInputError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
    return "jsonl", records


# --------------------------------------------------------------------------------------------
# Question files (§3.1)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PopeQuestion:
    question_id: int
    image: str
    text: str
    label: str  # exactly "yes" or "no"


@dataclass(frozen=True)
class ShippedFile:
    source: str
    version: str
    split: str


# sha256 of the question files shipped in ../shared/data/pope (RUCAIBox/POPE), to record and check
# which version a result used; v1 and v3 COCO files differ only subtly (§3.1 "v1 vs v3").
SHIPPED_FILES: dict[str, ShippedFile] = {
    "2ddd3bdfa0df7a77a2cb1765ed06ac5ed190b5a093aa405b96986e862e8cdac1": ShippedFile("aokvqa", "seem", "adversarial"),
    "2ae5bedee3450cda52f9b033942c7b04a3917a86a110e859a66c1e41934c6ffd": ShippedFile("aokvqa", "seem", "popular"),
    "f06eecde6d6ef4a00b95a7bbb510490708a09a6a67d952b59b8bdd33ac2c7200": ShippedFile("aokvqa", "seem", "random"),
    "1d8f0906a9b50c05640f6f23abfac97523be2a1bed28f7eadc63b811699b2d26": ShippedFile("coco", "v1", "adversarial"),
    "5b16653023bf4f64d57eb0d168259de6627f5cde7538b85ebed3cc33034aa6cc": ShippedFile("coco", "v1", "popular"),
    "c16b65d2df6d70bb0814c8a4375833d39cdb09928fd936d3fc546491efa37f35": ShippedFile("coco", "v1", "random"),
    "420b3407db1fa9f1187a805dca41cb7b97fd91504e6c2179706188c107fb8ef8": ShippedFile("coco", "v3", "adversarial"),
    "72c1a8ad45d0c13514f5f22598261df41d3b533854d29682e924db50ed8aa753": ShippedFile("coco", "v3", "popular"),
    "ac25245170b975a5bdf9080b23fd431dfe6be458bc038259c1f4f09a6bef7994": ShippedFile("coco", "v3", "random"),
    "74e01b41d8308e2392e3b8d961167496ff3901c01100265d931a7a392f138a7a": ShippedFile("gqa", "seem", "adversarial"),
    "dd03f06a458dd216e83233160fbf6628af9c63c84b11e99599f4fc0304b3361d": ShippedFile("gqa", "seem", "popular"),
    "6ce488eade3770185034939fabfe742fa32ed369011c8d9c3ac77bc0c85abd94": ShippedFile("gqa", "seem", "random"),
}

V1_TYPO = "imange"  # §3.1: v1's "Is there an <obj> in the imange?"
V1_RANDOM_SIZE = 2910


@dataclass(frozen=True)
class QuestionSet:
    path: Path
    sha256: str
    format: str  # "jsonl" | "json"
    questions: tuple[PopeQuestion, ...]

    @property
    def shipped(self) -> ShippedFile | None:
        return SHIPPED_FILES.get(self.sha256)

    @property
    def n_yes(self) -> int:
        return sum(q.label == "yes" for q in self.questions)

    @property
    def n_no(self) -> int:
        return sum(q.label == "no" for q in self.questions)

    @property
    def images(self) -> list[str]:
        """Distinct image file names in first-appearance order."""
        return list(dict.fromkeys(q.image for q in self.questions))

    def detected_version(self, source: str = "coco") -> str | None:
        """The version the file is known or evidently to be; None when it cannot be told."""
        if self.shipped is not None:
            return self.shipped.version
        if source == "coco" and (
            len(self.questions) == V1_RANDOM_SIZE or any(V1_TYPO in q.text for q in self.questions)
        ):
            return "v1"
        return None

    def detected_split(self) -> str | None:
        if self.shipped is not None:
            return self.shipped.split
        hits = [s for s in SPLITS if s in self.path.name]
        return hits[0] if len(hits) == 1 else None

    def summary(self) -> dict[str, Any]:
        return {
            "questions": str(self.path),
            "questions_sha256": self.sha256,
            "questions_format": self.format,
            "n_questions": len(self.questions),
            "shipped_file": None if self.shipped is None else vars(self.shipped),
        }


def _question(rec: Any, where: str) -> PopeQuestion:
    if not isinstance(rec, dict):
        raise PopeInputError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    missing = [k for k in ("question_id", "image", "text", "label") if k not in rec]
    if missing:
        raise PopeInputError(f"{where}: missing key(s) {', '.join(missing)}")
    qid, image, text, label = rec["question_id"], rec["image"], rec["text"], rec["label"]
    if not isinstance(qid, int) or isinstance(qid, bool):
        raise PopeInputError(f"{where}: question_id must be an integer, got {qid!r}")
    if not isinstance(image, str) or not image:
        raise PopeInputError(f"{where}: image must be a non-empty string, got {image!r}")
    if not isinstance(text, str):
        raise PopeInputError(f"{where}: text must be a string, got {text!r}")
    # The reference treats every non-"no" label as yes; a typo must not silently become a positive.
    if label not in LABELS:
        raise PopeInputError(f"{where}: label must be exactly 'yes' or 'no', got {label!r}")
    return PopeQuestion(qid, image, text, label)


def questions_from_records(records: Iterable[tuple[str, Any]]) -> tuple[PopeQuestion, ...]:
    """Validate `(where, record)` pairs; question ids must be unique."""
    out: list[PopeQuestion] = []
    seen: dict[int, str] = {}
    for where, rec in records:
        q = _question(rec, where)
        if q.question_id in seen:
            raise PopeInputError(f"{where}: duplicate question_id {q.question_id} (first at {seen[q.question_id]})")
        seen[q.question_id] = where
        out.append(q)
    return tuple(out)


def load_questions(path: Path | str) -> QuestionSet:
    """Load and validate a POPE question file (JSONL or one JSON array)."""
    path = Path(path)
    fmt, records = read_json_records(path)
    questions = questions_from_records((f"{path}:{line}", rec) for line, rec in records)
    if not questions:
        raise PopeInputError(f"{path}: no questions in the file")
    return QuestionSet(path, file_sha256(path), fmt, questions)


def default_question_file(pope_root: Path | str, source: str, version: str, split: str) -> Path:
    """Where the shipped files live under `pope_root` (§3.1 table)."""
    root = Path(pope_root)
    if source == "coco":
        return root / "coco" / version / f"coco_pope_{split}.json"
    return root / source / f"{source}_pope_{version}_{split}.json"


def resolve_suffix(value: str | None) -> tuple[str | None, str]:
    """(preset name or None, suffix string): a preset name of §3.2, else the literal string."""
    if value is None:
        return "none", ""
    if value in SUFFIX_PRESETS:
        return value, SUFFIX_PRESETS[value]
    return None, value


# --------------------------------------------------------------------------------------------
# Answers and matching (§3.3)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PopeAnswer:
    question_id: int
    text: str  # stripped answer (§3.2); "" for failed samples
    where: str  # "file:line" or "row n", for error messages
    error: str | None = None  # a failed sample: counted in n_errors, never scored


@dataclass(frozen=True)
class AnswerSet:
    path: Path
    sha256: str
    answers: tuple[PopeAnswer, ...]


def _answer_id(value: Any, where: str) -> int:
    # Ints, or decimal strings as some tools write them.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    raise PopeInputError(f"{where}: question_id must be an integer, got {value!r}")


def answer_from_record(rec: Any, where: str, answer_key: str | None = None) -> PopeAnswer:
    """`{question_id, answer}` or `{question_id, text}` (§3.3); `error` set marks a failed sample."""
    if not isinstance(rec, dict):
        raise PopeInputError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    if "question_id" not in rec:
        raise PopeInputError(f"{where}: missing key question_id")
    qid = _answer_id(rec["question_id"], where)
    error = rec.get("error") or None
    if answer_key is None:
        key = "answer" if "answer" in rec else "text" if "text" in rec else None
        if key is None:
            raise PopeInputError(f"{where}: no 'answer' or 'text' key")
    else:
        key = answer_key
        if key not in rec:
            raise PopeInputError(f"{where}: missing answer key {key!r}")
    value = rec.get(key)
    if error is not None:
        return PopeAnswer(qid, value.strip() if isinstance(value, str) else "", where, str(error))
    if not isinstance(value, str):
        raise PopeInputError(f"{where}: {key} must be a string, got {value!r}")
    # §3.2: parsers consume the stripped text (LLaVA stores it stripped; other tools may not).
    return PopeAnswer(qid, value.strip(), where)


def load_answers(path: Path | str, answer_key: str | None = None) -> AnswerSet:
    path = Path(path)
    _, records = read_json_records(path)
    answers = tuple(answer_from_record(rec, f"{path}:{line}", answer_key) for line, rec in records)
    return AnswerSet(path, file_sha256(path), answers)


@dataclass(frozen=True)
class MatchedAnswers:
    pairs: tuple[tuple[PopeQuestion, str], ...]  # (question, stripped answer), question-file order
    n_missing: int
    n_errors: int
    missing_ids: tuple[int, ...]


def match_answers(
    questions: Sequence[PopeQuestion],
    answers: Iterable[PopeAnswer],
    *,
    allow_missing: bool = False,
    questions_name: str = "the questions",
    answers_name: str = "the answers",
    allow_missing_hint: str = "allow_missing",
) -> MatchedAnswers:
    """Pair answers with questions by id: unknown or repeated ids are errors; missing ones too unless allowed."""
    by_id = {q.question_id: q for q in questions}
    got: dict[int, PopeAnswer] = {}
    for a in answers:
        if a.question_id not in by_id:
            raise PopeInputError(f"{a.where}: question_id {a.question_id} is not in {questions_name}")
        if a.question_id in got:
            first = got[a.question_id].where
            raise PopeInputError(f"{a.where}: question_id {a.question_id} answered twice (first at {first})")
        got[a.question_id] = a
    missing = tuple(q.question_id for q in questions if q.question_id not in got)
    if missing and not allow_missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise PopeInputError(
            f"{answers_name}: {len(missing)} of {len(questions)} questions in {questions_name} have no answer "
            f"(question_id {shown}); set {allow_missing_hint} to score the answered ones only"
        )
    answered = [(q, got[q.question_id]) for q in questions if q.question_id in got]
    pairs = tuple((q, a.text) for q, a in answered if a.error is None)
    n_errors = sum(a.error is not None for a in got.values())
    return MatchedAnswers(pairs, len(missing), n_errors, missing)


# --------------------------------------------------------------------------------------------
# Parsers (§3.4, §3.5). Each maps (answer, label) to "yes" | "no" | "other".
# Parsers do not strip: the matcher already did (§3.2), and §6 item 13 checks `No\n` raw.
# --------------------------------------------------------------------------------------------


def parse_official(answer: str) -> str:
    """RUCAIBox/POPE and LLaVA (§3.4): case-sensitive word test on the text before the first '.'."""
    if "." in answer:
        answer = answer.split(".")[0]
    words = answer.replace(",", "").split(" ")
    return "no" if ("No" in words or "not" in words or "no" in words) else "yes"


def parse_opera(answer: str) -> str:
    """OPERA (§3.5): also `NO` and words ending in n't; periods removed, not truncated at."""
    words = answer.replace(".", "").replace(",", "").split(" ")
    if any(w in ("No", "not", "no", "NO") or w.endswith("n't") for w in words):
        return "no"
    return "yes"


def parse_vcd_asymmetric(answer: str, label: str) -> str:
    """VCD (§3.5): the substring test depends on the label, so `know` is a no for label no."""
    a = answer.lower().strip()
    if label == "yes":
        return "yes" if "yes" in a else "no"
    return "no" if "no" in a else "yes"


def parse_lmms_exact(answer: str) -> str:
    """lmms-eval (§3.5): exactly `yes` or `no` after lower-casing and stripping, else other."""
    a = answer.lower().strip()
    return a if a in ("yes", "no") else "other"


# VQA punctuation handling of VLMEvalKit's yes/no extraction (§3.5, 21 characters).
_YORN_PUNCT: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)
_DIGIT_COMMA_DIGIT = re.compile(r"\d,\d")
# §3.5 step 3: periods not adjacent to digits. (The reference regex only looks ahead; for whether a
# whitespace-separated word equals `yes`/`no` the two readings give the same result.)
_LONE_PERIOD = re.compile(r"(?<!\d)\.(?!\d)")
_YORN_MAX_PERIODS = 32  # the reference passes re.UNICODE (= 32) as `count`


def yorn_extract(answer: str) -> str:
    """VLMEvalKit's YOrN extraction without the LLM judge: `Yes`, `No` or `Unknown` (§3.5)."""
    text = answer.lower()
    out = text
    digit_comma = _DIGIT_COMMA_DIGIT.search(text) is not None
    for ch in _YORN_PUNCT:
        # The condition looks at the lower-cased input, not at the text being rewritten.
        if (ch + " " in text or " " + ch in text) or digit_comma:
            out = out.replace(ch, "")
        else:
            out = out.replace(ch, " ")
    out = _LONE_PERIOD.sub("", out, count=_YORN_MAX_PERIODS)
    words = out.split()
    if "yes" in words and "no" not in words:
        return "Yes"
    if "no" in words and "yes" not in words:
        return "No"
    return "Unknown"


def parse_vlmevalkit_yorn(answer: str) -> str:
    return {"Yes": "yes", "No": "no"}.get(yorn_extract(answer), "other")


@dataclass(frozen=True)
class Parser:
    name: str
    predict: Callable[[str, str], str]  # (answer, label) -> "yes" | "no" | "other"
    # How "other" enters precision/recall (§3.5): lmms_exact drops it from both; VLMEvalKit counts
    # it as "not yes", i.e. a false negative when the label is yes.
    other_is_negative: bool = False


PARSERS: dict[str, Parser] = {
    "official": Parser("official", lambda a, _l: parse_official(a)),
    "opera": Parser("opera", lambda a, _l: parse_opera(a)),
    "vcd_asymmetric": Parser("vcd_asymmetric", parse_vcd_asymmetric),
    "lmms_exact": Parser("lmms_exact", lambda a, _l: parse_lmms_exact(a)),
    "vlmevalkit_yorn": Parser("vlmevalkit_yorn", lambda a, _l: parse_vlmevalkit_yorn(a), other_is_negative=True),
}


def get_parser(name: str) -> Parser:
    try:
        return PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown POPE parser {name!r}; expected one of {', '.join(PARSERS)}") from None


def parse_answer(answer: str, parser: str = "official", label: str = "yes") -> str:
    """The prediction "yes" | "no" | "other"; `label` matters only for vcd_asymmetric."""
    return get_parser(parser).predict(answer, label)


_NON_WORD = re.compile(r"[^a-z0-9']")


def clear_reading(answer: str) -> str | None:
    """The case- and punctuation-insensitive reading of §3.7's diagnostic: "yes" when the words
    contain `yes` but neither `no` nor `not`, "no" for the reverse, None when it is not clear."""
    words = set(_NON_WORD.sub(" ", answer.lower()).split())
    has_yes, has_no = "yes" in words, ("no" in words or "not" in words)
    if has_yes == has_no:
        return None
    return "yes" if has_yes else "no"


def is_unparseable(answer: str) -> bool:
    """§3.7 diagnostic: no clear yes/no, i.e. (`yes` present) == (`no` or `not` present)."""
    return clear_reading(answer) is None


# --------------------------------------------------------------------------------------------
# Metrics (§3.7)
# --------------------------------------------------------------------------------------------


def _div(num: float, den: float, what: str, context: str) -> float:
    # §0: a zero denominator gives 0.0 with a warning, never a crash.
    if den == 0:
        log.warning("POPE %s%s: zero denominator, reported as 0.0", what, f" ({context})" if context else "")
        return 0.0
    return num / den


@dataclass(frozen=True)
class PopeMetrics:
    """Confusion counts and diagnostics; every rate is derived from them, so pooling is a sum."""

    n: int = 0  # scored questions
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0  # with vlmevalkit_yorn, includes label-yes answers predicted "other"
    n_yes: int = 0  # predictions equal to yes
    n_other: int = 0  # predictions neither yes nor no (lmms_exact, vlmevalkit_yorn)
    n_empty: int = 0
    n_unparseable: int = 0
    n_missing: int = 0
    n_errors: int = 0
    # Answers with a clear reading (clear_reading) that the parser predicted differently, e.g. the
    # official parser's yes for "NO." or "No!": the parser, not the model, decided those.
    n_parser_disagree: int = 0

    @property
    def mostly_unparseable(self) -> bool:
        """More than half the answers show no clear yes/no: the rates describe the parser's defaults."""
        return self.n > 0 and 2 * self.n_unparseable > self.n

    def __add__(self, other: PopeMetrics) -> PopeMetrics:
        return PopeMetrics(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def rates(self, context: str = "") -> dict[str, float]:
        precision = _div(self.tp, self.tp + self.fp, "precision", context)
        recall = _div(self.tp, self.tp + self.fn, "recall", context)
        return {
            "accuracy": _div(self.tp + self.tn, self.n, "accuracy", context),
            "precision": precision,
            "recall": recall,
            "f1": _div(2 * precision * recall, precision + recall, "F1", context),
            "yes_ratio": _div(self.n_yes, self.n, "yes_ratio", context),  # from predictions (§3.7)
        }

    def as_dict(self, context: str = "") -> dict[str, Any]:
        counts = {
            "n": self.n, "TP": self.tp, "FP": self.fp, "TN": self.tn, "FN": self.fn,
            "n_yes": self.n_yes, "n_other": self.n_other, "n_empty": self.n_empty,
            "n_unparseable": self.n_unparseable, "n_missing": self.n_missing, "n_errors": self.n_errors,
            "n_parser_disagree": self.n_parser_disagree, "mostly_unparseable": self.mostly_unparseable,
        }  # fmt: skip
        return {**counts, **self.rates(context)}

    def warnings(self, parser: str, context: str = "") -> list[str]:
        """One line per problem a reader of the rates must know about (also logged by the scorers)."""
        where = f"POPE {context}: " if context else "POPE: "
        out = []
        if self.n_parser_disagree:
            out.append(f"{where}{self.n_parser_disagree} of {self.n} answers read differently by parser {parser!r} "
                       "than their case/punctuation-insensitive reading (e.g. 'NO.' or 'No!' counted as yes)")  # fmt: skip
        if self.mostly_unparseable:
            out.append(f"{where}{self.n_unparseable} of {self.n} answers show no clear yes/no: "
                       "the rates measure the parser's default, not the model")  # fmt: skip
        return out


def compute_metrics(
    pairs: Iterable[tuple[str, str]],
    parser: str = "official",
    *,
    n_missing: int = 0,
    n_errors: int = 0,
) -> PopeMetrics:
    """Metrics from (label, stripped answer) pairs."""
    p = get_parser(parser)
    c = dict.fromkeys(("n", "tp", "fp", "tn", "fn", "n_yes", "n_other", "n_empty", "n_unparseable", "n_parser_disagree"), 0)
    for label, answer in pairs:
        if label not in LABELS:
            raise ValueError(f"label must be 'yes' or 'no', got {label!r}")
        pred = p.predict(answer, label)
        c["n"] += 1
        if pred == "yes":
            c["n_yes"] += 1
            c["tp" if label == "yes" else "fp"] += 1
        elif pred == "no":
            c["tn" if label == "no" else "fn"] += 1
        else:
            c["n_other"] += 1
            if p.other_is_negative and label == "yes":
                c["fn"] += 1
        c["n_empty"] += answer == ""
        reading = clear_reading(answer)
        c["n_unparseable"] += reading is None
        c["n_parser_disagree"] += reading is not None and pred != reading
    return PopeMetrics(**c, n_missing=n_missing, n_errors=n_errors)


def question_counts(label: str, answer: str, parser: str = "official") -> dict[str, int]:
    """One question's contribution to TP/FP/TN/FN/n under `parser` (for per-image bootstrap units)."""
    m = compute_metrics([(label, answer)], parser)
    return {"tp": m.tp, "fp": m.fp, "tn": m.tn, "fn": m.fn, "n": m.n}


def matched_units(matched: MatchedAnswers, parser: str = "official") -> Any:
    """Per-image confusion counts of the scored questions (`vh_bench.metrics.intervals.UnitTable`)."""
    from vh_bench.metrics.intervals import confusion_units

    return confusion_units((q.image, question_counts(q.label, a, parser)) for q, a in matched.pairs)


def pope_intervals(matched: MatchedAnswers, parser: str = "official") -> tuple[dict[str, Any], Any]:
    """(ci, units): bootstrap intervals over images of accuracy and F1, and the per-image counts."""
    from vh_bench.metrics.intervals import confusion_statistics, intervals

    units = matched_units(matched, parser)
    return intervals(units, confusion_statistics()), units


def score_matched(matched: MatchedAnswers, parser: str = "official") -> PopeMetrics:
    """Metrics of the matched answers; nothing to score (no answers, or only failed ones) is an error."""
    if not matched.pairs:
        # 0 answers would print as accuracy 0.0 / F1 0.0, which reads like a (terrible) score.
        if matched.n_errors:
            raise PopeInputError(f"POPE: nothing to score: all {matched.n_errors} answers are failed samples (error field)")
        raise PopeInputError("POPE: nothing to score: no answers")
    return compute_metrics(
        ((q.label, a) for q, a in matched.pairs), parser, n_missing=matched.n_missing, n_errors=matched.n_errors
    )


def aggregate_splits(per_split: Mapping[str, PopeMetrics]) -> dict[str, Any]:
    """§3.7: each split separately, the unweighted mean of the per-split rates, and pooled counts.

    Callers pass the splits of ONE (source, version, parser): sources are never pooled.
    """
    if not per_split:
        raise ValueError("no splits to aggregate")
    splits = {name: m.as_dict(context=name) for name, m in per_split.items()}
    mean = {k: sum(s[k] for s in splits.values()) / len(splits) for k in RATE_KEYS}
    pooled = sum(per_split.values(), PopeMetrics())
    return {"splits": splits, "mean": mean, "pooled": pooled.as_dict(context="pooled")}


def evaluate_files(
    questions_path: Path | str,
    answers_path: Path | str,
    *,
    parser: str = "official",
    answer_key: str | None = None,
    allow_missing: bool = False,
) -> tuple[QuestionSet, AnswerSet, PopeMetrics]:
    """Load, match by id and score one (question file, answer file) pair."""
    qs, ans, matched = match_files(questions_path, answers_path, parser=parser, answer_key=answer_key,
                                   allow_missing=allow_missing)  # fmt: skip
    return qs, ans, score_matched(matched, parser)


def match_files(
    questions_path: Path | str,
    answers_path: Path | str,
    *,
    parser: str = "official",
    answer_key: str | None = None,
    allow_missing: bool = False,
) -> tuple[QuestionSet, AnswerSet, MatchedAnswers]:
    """Load one (question file, answer file) pair and match the answers by id."""
    get_parser(parser)  # fail on a bad name before reading files
    qs = load_questions(questions_path)
    ans = load_answers(answers_path, answer_key)
    if not ans.answers:
        raise PopeInputError(f"{ans.path}: no answers in the file")
    matched = match_answers(
        qs.questions, ans.answers, allow_missing=allow_missing,
        questions_name=str(qs.path), answers_name=str(ans.path), allow_missing_hint="--allow-missing",
    )  # fmt: skip
    return qs, ans, matched
