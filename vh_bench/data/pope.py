"""`dataset=pope`: yes/no object questions (metrics.md §3), from a shipped question file or
generated from COCO-format annotations (the demo data, metrics.md §4.2 rules).

One dataset instance is one (source, version, split); the three splits are three runs, averaged
by the report (§3.7). The question text goes to the model verbatim, v1's "imange" typo included.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Collection
from typing import Any, ClassVar

from vh_bench.data.pope_gen import generate_questions, images_from_coco
from vh_bench.errors import ConfigError
from vh_bench.metrics.pope import (
    PARSERS,
    SOURCES,
    SPLITS,
    VERSIONS,
    PopeAnswer,
    PopeInputError,
    QuestionSet,
    default_question_file,
    file_sha256,
    load_questions,
    match_answers,
    pope_intervals,
    questions_from_records,
    resolve_suffix,
    score_matched,
)
from vh_bench.paths import shared_dir
from vh_bench.records import Sample

log = logging.getLogger(__name__)

GENERATED_VERSION = "gen"  # version tag of questions generated from annotations


@dataclass
class PopeDataset:
    """Kwargs are the config keys of `configs/dataset/pope.yaml`."""

    name: str = "pope"
    source: str = "coco"  # coco | aokvqa | gqa (free label when questions are generated)
    split: str = "random"
    version: str | None = None  # None: the source's default (coco v3, aokvqa/gqa seem)
    question_file: str | None = None  # None: the shipped file under `pope_root`
    pope_root: str | None = None  # None: <shared>/data/pope
    image_dir: str | None = None
    question_suffix: str | None = "llava"  # preset llava | vcd | none, or a literal suffix
    parser: str = "official"
    allow_missing: bool = False
    max_new_tokens: int = 16  # runner's generation override: a yes/no answer is a few tokens
    annotations: str | None = None  # COCO instances JSON: generate the questions instead
    gen_seed: int = 0
    task: ClassVar[str] = "pope"
    _questions: QuestionSet | None = field(default=None, init=False, repr=False, compare=False)

    # ---------------------------------------------------------------- resolution

    @property
    def generated(self) -> bool:
        return self.annotations is not None and self.question_file is None

    @property
    def resolved_version(self) -> str:
        if self.version is not None:
            return str(self.version)
        if self.generated:
            return GENERATED_VERSION
        return VERSIONS.get(self.source, ("v3",))[0]

    @property
    def question_path(self) -> Path:
        if self.question_file is not None:
            return Path(self.question_file)
        root = Path(self.pope_root) if self.pope_root is not None else shared_dir() / "data" / "pope"
        return default_question_file(root, self.source, self.resolved_version, self.split)

    @property
    def suffix(self) -> str:
        return resolve_suffix(self.question_suffix)[1]

    def _id_prefix(self) -> str:
        return f"pope:{self.source}:{self.resolved_version}:{self.split}:"

    # ---------------------------------------------------------------- loading

    def _load(self) -> QuestionSet:
        if self._questions is None:
            self._questions = self._generate() if self.generated else self._read()
        return self._questions

    def _read(self) -> QuestionSet:
        path = self.question_path
        key = "dataset.question_file" if self.question_file is not None else "dataset.pope_root"
        if not path.is_file():
            fix = "set dataset.pope_root or dataset.question_file"
            raise ConfigError(key, f"POPE question file {path} not found", fix)
        try:
            return load_questions(path)
        except (PopeInputError, UnicodeDecodeError) as exc:
            raise ConfigError("dataset.question_file", str(exc)) from None

    def _generate(self) -> QuestionSet:
        path = Path(str(self.annotations))
        if not path.is_file():
            raise ConfigError("dataset.annotations", f"COCO instances file {path} not found")
        try:
            generated = generate_questions(images_from_coco(path), self.split, seed=int(self.gen_seed))
        except (ValueError, OSError) as exc:
            raise ConfigError("dataset.annotations", str(exc)) from None
        if not generated:
            raise ConfigError("dataset.annotations", f"no image in {path} has 3 or more object categories")
        questions = questions_from_records((f"{path}#q{q.question_id}", q.as_record()) for q in generated)
        return QuestionSet(path, file_sha256(path), "generated", questions)

    # ---------------------------------------------------------------- protocol

    def check(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError("dataset.split", f"{self.split!r} is not a POPE split", "random, popular or adversarial")
        if self.parser not in PARSERS:
            raise ConfigError("dataset.parser", f"unknown parser {self.parser!r}", "one of " + ", ".join(PARSERS))
        if int(self.max_new_tokens) < 1:
            raise ConfigError("dataset.max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        if not self.source or ":" in self.source:
            raise ConfigError("dataset.source", f"{self.source!r} is not a usable source name")
        if self.annotations is not None and self.question_file is not None:
            raise ConfigError("dataset.annotations", "set dataset.question_file or dataset.annotations, not both")
        if not self.generated:
            self._check_source_version()
        qs = self._load()
        if not self.generated:
            self._check_file_identity(qs)
        self._check_images(qs)

    def _check_source_version(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError("dataset.source", f"unknown POPE source {self.source!r}", "coco, aokvqa or gqa")
        if self.question_file is None and self.resolved_version not in VERSIONS[self.source]:
            raise ConfigError(
                "dataset.version",
                f"POPE {self.source} has no version {self.resolved_version!r}",
                "one of " + ", ".join(VERSIONS[self.source]) + ", or null for the default",
            )

    def _check_file_identity(self, qs: QuestionSet) -> None:
        # A result must say which file version it used (§3.1): refuse a file that contradicts the config.
        shipped = qs.shipped
        if shipped is not None and shipped.source != self.source:
            raise ConfigError("dataset.source", f"{qs.path} is a POPE {shipped.source} file, not {self.source}")
        detected = qs.detected_version(self.source)
        if detected is not None and detected != self.resolved_version:
            raise ConfigError(
                "dataset.version", f"{qs.path} is POPE {self.source} {detected}, not {self.resolved_version}",
                f"set dataset.version={detected}",
            )  # fmt: skip
        if shipped is not None and shipped.split != self.split:
            raise ConfigError("dataset.split", f"{qs.path} is the {shipped.split} split, not {self.split}")
        if shipped is None:
            log.warning("%s (sha256 %s…) is not a shipped POPE file; version unverified", qs.path, qs.sha256[:12])

    def _check_images(self, qs: QuestionSet) -> None:
        if self.image_dir is None:
            raise ConfigError("dataset.image_dir", "is not set", "the COCO val2014 folder (GQA: the GQA image folder)")
        d = Path(self.image_dir)
        if not d.is_dir():
            fix = "set paths.coco_root or dataset.image_dir"
            raise ConfigError("dataset.image_dir", f"image directory {d} not found", fix)
        images = qs.images
        missing = [im for im in images if not (d / im).is_file()]
        if missing:
            hint = "GQA questions need the GQA image folder" if self.source == "gqa" else "set dataset.image_dir"
            problem = f"{len(missing)} of {len(images)} images of {qs.path.name} are not in {d}, e.g. {missing[0]}"
            raise ConfigError("dataset.image_dir", problem, hint)

    def samples(self) -> list[Sample]:
        qs = self._load()
        d = Path(self.image_dir) if self.image_dir is not None else Path()
        suffix, prefix = self.suffix, self._id_prefix()
        return [
            Sample(
                f"{prefix}{q.question_id}",
                d / q.image,
                q.text + suffix,  # §3.2: question verbatim + suffix
                {"question_id": q.question_id, "label": q.label, "image": q.image},
            )
            for q in qs.questions
        ]

    def score(self, rows: list[dict[str, Any]], selected: Collection[str] | None = None) -> dict[str, Any]:
        """POPE metrics of one split from the run's sample lines (§3.3, §3.7).

        Rows with an `error` are unanswered: counted in `n_errors`, not scored. Missing rows are an
        error unless `allow_missing`; then metrics cover the answered questions (`scored_on`).
        """
        qs = self._load()
        prefix = self._id_prefix()
        questions = list(qs.questions)
        if selected is not None:
            # The runner's selection (runtime.limit): score against the questions it asked.
            questions = [q for q in questions if f"{prefix}{q.question_id}" in selected]
        by_id = {q.question_id: q for q in questions}
        answers: list[PopeAnswer] = []
        for i, row in enumerate(rows, 1):
            sid = str(row.get("sample_id", ""))
            where = f"sample line {i} ({sid})"
            if not sid.startswith(prefix):
                raise PopeInputError(f"{where}: not a sample of {prefix[:-1]}")
            qid = row.get("question_id", sid[len(prefix):])
            try:
                qid = int(qid)
            except (TypeError, ValueError):
                raise PopeInputError(f"{where}: bad question_id {qid!r}") from None
            q = by_id.get(qid)
            if q is not None and row.get("label") not in (None, q.label):
                raise PopeInputError(f"{where}: label {row.get('label')!r} differs from {qs.path}'s {q.label!r}")
            text = row.get("text")
            answer = text.strip() if isinstance(text, str) else ""
            answers.append(PopeAnswer(qid, answer, where, row.get("error") or None))
        matched = match_answers(
            questions, answers, allow_missing=self.allow_missing, questions_name=str(qs.path),
            answers_name="the run's sample lines", allow_missing_hint="dataset.allow_missing=true",
        )  # fmt: skip
        m = score_matched(matched, self.parser)
        context = f"{self.source} {self.resolved_version} {self.split}"
        warnings = m.warnings(self.parser, context)
        for line in warnings:
            log.warning("%s", line)
        ci, units = pope_intervals(matched, self.parser)
        return {
            "source": self.source,
            "version": self.resolved_version,
            "split": self.split,
            "parser": self.parser,
            "n_questions": len(questions),
            "n_scored": m.n,
            # Rates over all questions, or only over the answered ones (errors / allowed missing).
            "scored_on": "all" if m.n == len(questions) else "answered_subset",
            **m.as_dict(context=context),
            "warnings": warnings,
            "ci": ci,  # bootstrap over images (all questions of an image resampled together)
            "bootstrap": {k: ci["f1"][k] for k in ("n_resamples", "seed", "level")},
            "units": {"pope": units.as_dict()},
        }

    def identity(self) -> dict[str, Any]:
        """What selects the samples and prompts (runner fingerprint): content, not paths or parser."""
        qs = self._load()
        ident: dict[str, Any] = {
            "name": self.name,
            "task": self.task,
            "source": self.source,
            "version": self.resolved_version,
            "split": self.split,
            "question_suffix": self.suffix,
        }
        if self.generated:
            ident.update(annotations_sha256=qs.sha256, gen_seed=int(self.gen_seed))
        else:
            ident["questions_sha256"] = qs.sha256
        return ident

    def provenance(self) -> dict[str, Any]:
        qs = self._load()
        preset, _ = resolve_suffix(self.question_suffix)
        prov: dict[str, Any] = {
            **self.identity(),
            "question_file": str(qs.path),
            "question_file_format": qs.format,
            "n_questions": len(qs.questions),
            "n_yes": qs.n_yes,
            "n_no": qs.n_no,
            "n_images": len(qs.images),
            "question_suffix_preset": preset,
            "parser": self.parser,
            "allow_missing": bool(self.allow_missing),
            "image_dir": self.image_dir,
        }
        if self.generated:
            prov.update(annotations=str(qs.path), generator="metrics.md §4.2")
        else:
            prov.update(
                version_detected=qs.detected_version(self.source),
                shipped_file=None if qs.shipped is None else vars(qs.shipped),
            )
        return prov
