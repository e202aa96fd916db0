"""What the run browser shows, gathered from run directories: per image, each method's caption
with its CHAIR words located in the text, and its POPE answers judged against the labels.

Captions are classified by the same CHAIR code and the same ground truth the run was scored with
(`vh_bench.rescore`), so a word marked hallucinated here is one CHAIR counted as hallucinated.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.data.base import select_samples
from vh_bench.rescore import _build_dataset, _ground_truth, _recorded_gt, read_run
from vh_bench.store import RunStore

HALLUCINATED, CORRECT = "hallucinated", "correct"


@dataclass(frozen=True)
class Mark:
    """A CHAIR object mention: characters [start, end) of the caption text."""

    start: int
    end: int
    kind: str  # HALLUCINATED | CORRECT
    word: str  # the COCO object (node word) it counts as


@dataclass
class CaptionView:
    method: str
    run: str
    text: str
    marks: list[Mark] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # ground-truth objects the caption never names
    gt_missing: bool = False  # the image has no ground truth at all
    error: str | None = None

    @property
    def hallucinated(self) -> list[str]:
        return [m.word for m in self.marks if m.kind == HALLUCINATED]

    @property
    def correct(self) -> list[str]:
        return [m.word for m in self.marks if m.kind == CORRECT]


@dataclass
class AnswerView:
    method: str
    run: str
    question: str
    answer: str
    predicted: str  # yes | no | other (the run's parser)
    label: str
    error: str | None = None

    @property
    def right(self) -> bool:
        return self.error is None and self.predicted == self.label


@dataclass
class ImageView:
    key: str  # the image file's path: captions and POPE questions of one image meet here
    image_path: Path | None
    image_id: int | None = None
    prompts: dict[str, str] = field(default_factory=dict)  # task -> prompt
    captions: list[CaptionView] = field(default_factory=list)
    answers: list[AnswerView] = field(default_factory=list)

    @property
    def has_hallucination(self) -> bool:
        return any(c.hallucinated for c in self.captions)


@dataclass
class Browse:
    images: list[ImageView]
    runs: list[dict[str, Any]]  # one summary per run shown: method, dataset, run dir, headline metrics

    @property
    def methods(self) -> list[str]:
        return sorted({r["method"] for r in self.runs})


def find_run_dirs(paths: Sequence[Path | str]) -> list[Path]:
    """Each path is a run directory or a folder holding run directories (found by their config)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        if (p / "config.yaml").is_file() and any(p.glob("samples*.jsonl")):
            out.append(p.resolve())
            continue
        found = sorted(c.parent.resolve() for c in p.rglob("config.yaml") if any(c.parent.glob("samples*.jsonl")))
        if not found:
            raise FileNotFoundError(f"{p}: no run directory (config.yaml + samples*.jsonl) in it")
        out += found
    return list(dict.fromkeys(out))


def char_spans(text: str, tokens: Sequence[str]) -> list[tuple[int, int] | None]:
    """Where each word-tokenizer token lies in `text` (searched left to right, case-insensitive);
    None for a token the tokenizer rewrote (e.g. quotes), so that one token is not marked."""
    low = text.lower()
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for tok in tokens:
        at = low.find(tok, cursor)
        if at < 0:
            spans.append(None)
            continue
        spans.append((at, at + len(tok)))
        cursor = at + len(tok)
    return spans


def caption_marks(text: str, sentence: dict[str, Any], dialect: str, synonyms: str | Path | None = None) -> list[Mark]:
    """The mentions CHAIR found in `text` (`sentence`: its §1.9 per-caption record) as text spans.
    A mention starts at token `position`; a merged double word ("hot dog") runs to the next entry."""
    from vh_bench.metrics.chair_words import _tokenize, load_synonyms, merge_double_words, normalise_caption, words_from_tokens

    norm = normalise_caption(text, dialect)
    tokens = _tokenize(text.lower())
    if len(tokens) != len(norm):
        return []  # the normaliser is token-for-token; if not, do not guess
    spans = char_spans(text, tokens)
    _, starts = merge_double_words(norm)
    next_start = {s: (starts[k + 1] if k + 1 < len(starts) else len(norm)) for k, s in enumerate(starts)}
    cw = words_from_tokens(norm, load_synonyms(synonyms))  # the table the run was scored with
    halluc = set(sentence["hallucination_idxs"])
    marks = []
    for node, pos in zip(cw.node_words, cw.positions):
        first, last = spans[pos], spans[next_start[pos] - 1]
        if first is None or last is None:
            continue
        marks.append(Mark(first[0], last[1], HALLUCINATED if pos in halluc else CORRECT, node))
    return marks


def _samples_by_id(dataset: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    return {s.sample_id: s for s in select_samples(dataset, (cfg.get("runtime") or {}).get("limit"))}


def _image(images: dict[str, ImageView], sample: Any) -> ImageView:
    key = str(Path(sample.image_path).resolve())
    view = images.get(key)
    if view is None:
        view = images[key] = ImageView(key, Path(sample.image_path))
    return view


def _caption_run(images: dict[str, ImageView], run: str, method: str, dataset: Any, results: Any, rows, samples) -> None:
    from vh_bench.metrics.chair import evaluate_chair

    gt = _ground_truth(dataset, _recorded_gt(results))
    ok = [r for r in rows if not r.get("error")]
    res = evaluate_chair([(int(r["image_id"]), str(r["text"])) for r in ok], gt, dialect=dataset.dialect,
                         missing_gt="reference", synonyms_path=dataset.chair.get("synonyms"))  # fmt: skip
    sentences = iter(res.per_caption)
    for row in rows:
        sample = samples[row["sample_id"]]
        view = _image(images, sample)
        view.image_id = int(row["image_id"])
        view.prompts["caption"] = sample.prompt
        if row.get("error"):
            view.captions.append(CaptionView(method, run, "", error=str(row["error"])))
            continue
        s = next(sentences)
        text = str(row["text"])
        missed = sorted(set(s["mscoco_gt_words"]) - set(s["mscoco_generated_words"]))
        marks = caption_marks(text, s, dataset.dialect, dataset.chair.get("synonyms"))
        view.captions.append(CaptionView(method, run, text, marks, missed,
                                         bool(s.get("gt_missing"))))  # fmt: skip


def _pope_run(images: dict[str, ImageView], run: str, method: str, dataset: Any, rows, samples) -> None:
    from vh_bench.metrics.pope import parse_answer

    for row in rows:
        sample = samples[row["sample_id"]]
        view = _image(images, sample)
        label = str(row.get("label") or sample.meta.get("label"))
        text = str(row.get("text") or "").strip()
        pred = parse_answer(text, dataset.parser, label) if not row.get("error") else "other"
        view.answers.append(AnswerView(method, run, sample.prompt, text, pred, label, row.get("error") or None))


def gather(paths: Iterable[Path | str]) -> Browse:
    """Every sample of every run under `paths`, grouped by image (in the order first seen)."""
    images: dict[str, ImageView] = {}
    runs = []
    used: set[tuple[str, str]] = set()
    for run_dir in find_run_dirs(list(paths)):
        results, cfg = read_run(run_dir)
        dataset = _build_dataset(cfg)
        samples = _samples_by_id(dataset, cfg)
        rows = [r for r in RunStore(run_dir).rows() if r["sample_id"] in samples]
        method = str((results or {}).get("method_label") or (cfg.get("method") or {}).get("_target_", "?").rsplit(".", 1)[-1])
        label = f"{method}" if not results else f"{method} ({results.get('model', '?')})"
        run = run_dir.name
        task = getattr(dataset, "task", "caption")
        if (label, task) in used:  # two runs of one method (a sweep): tell them apart by run
            label = f"{label} [{run}]"
        used.add((label, task))
        if task == "pope":
            _pope_run(images, run, label, dataset, rows, samples)
        else:
            _caption_run(images, run, label, dataset, results, rows, samples)
        metrics = (results or {}).get("metrics") or {}
        runs.append({
            "method": label, "dataset": getattr(dataset, "name", "?"), "run_dir": str(run_dir), "run": run,
            "n": len(rows), "chair": metrics.get("chair"), "pope_f1": metrics.get("f1"),
        })  # fmt: skip
    return Browse(list(images.values()), runs)


def dumps(browse: Browse) -> str:
    """The gathered views as JSON (for tools, and the tests)."""

    def enc(o: Any) -> Any:
        if isinstance(o, Path):
            return str(o)
        if hasattr(o, "__dataclass_fields__"):
            return {k: enc(v) for k, v in vars(o).items()}
        if isinstance(o, (list, tuple)):
            return [enc(v) for v in o]
        if isinstance(o, dict):
            return {k: enc(v) for k, v in o.items()}
        return o

    return json.dumps(enc(browse), indent=1)
