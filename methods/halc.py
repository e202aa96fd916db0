"""HALC: DoLa base + object-word verification + FOV focal contrast + BLIP-ranked beams (methods.md §7).

HALC replaces the shared loop with its own search (§1.4) but keeps its contracts: one sample per
call, batch-1 caches per beam, plain attention (`vh_attn` with no controller), the three timer
points of §1.8 and per-sample seeds. The bookkeeping is cache-consistent (§7.2, §7.9): the main
cache always holds `prompt + V + W`, checked every iteration.

Helpers live in siblings named for their job: `halc_dola` (base decoder), `halc_words` (word
starts, object test), `halc_grounding` (detectors, box rules), `halc_fov` (views, divergence,
candidates), `halc_scorer` (BLIP).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from methods.halc_dola import DolaConfig, DolaHead
from methods.halc_fov import ViewEncoder, contrast_candidates, crop_cache_to, fov_boxes, rank_pairs
from methods.halc_grounding import (
    BOX_THRESHOLDS,
    DEFAULT_BOX,
    DETECTOR_HUB_IDS,
    DETECTOR_MODEL_TYPES,
    CentralBox,
    GroundingDinoDetector,
    Owlv2Detector,
    ground,
)
from methods.halc_scorer import SCORER_HUB_ID, SCORER_LABELS, SCORER_MODEL_TYPE, BlipScorer
from methods.settings import check_halc
from methods.halc_words import ADD_WORDS, EXEMPT_WORDS, NltkTagger, SpacyTagger, last_piece, object_test, word_start_table
from vh_bench.decoding import attention, kv_cache
from vh_bench.decoding.method import Method
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.decoding.timing import SampleTimer
from vh_bench.errors import ConfigError
from vh_bench.models.auxiliary import check_aux_checkpoint, load_aux
from vh_bench.models.llava import LlavaAdapter, ModelInputs
from vh_bench.records import GenConfig, Generation

LITE_HINT = "or method.detector=none for the labelled halc-lite fallback"


@dataclass
class HALC(Method):
    """`method=halc`; `method.detector=none` runs the labelled fallback `halc-lite` (§7.8)."""

    detector: str = "grounding_dino"
    detector_checkpoint: str | None = None  # null → the detector's hub id (§9)
    box_threshold: float | None = None  # null → 0.45 (grounding_dino) / 0.05 (owlv2)
    text_threshold: float = 0.4
    min_box_area: float = 0.01
    box_iou_dedup: float = 0.6
    max_boxes: int = 3
    default_box: list[float] = field(default_factory=lambda: list(DEFAULT_BOX))
    num_fov: int = 4
    expand_ratio: float = 0.6
    num_pairs: int = 2
    contrast_weight: float = 0.05
    divergence: str = "halc"
    scorer: str = "blip_itm"
    scorer_checkpoint: str = SCORER_HUB_ID
    beam_size: int = 1
    skip_rate: float = 0.0
    tagger: str = "nltk"
    dola: DolaConfig = field(default_factory=DolaConfig)
    delete_undetected: bool = True
    min_committed_before_delete: int = 8
    exempt_words: list[str] = field(default_factory=lambda: list(EXEMPT_WORDS))
    add_words: list[str] = field(default_factory=lambda: list(ADD_WORDS))
    verify: bool = True
    view_cache_size: int = 0  # §7.6 retains no view cache; N > 0 keeps N per sample (an option)
    aux_cache_dir: str | None = None  # where `random:*` checkpoints are built; not an output setting

    strategies = ("greedy",)

    def __post_init__(self) -> None:
        if isinstance(self.dola, dict):
            try:
                self.dola = DolaConfig(**self.dola)
            except TypeError as exc:
                raise ConfigError("method.dola", f"unknown key ({exc})") from exc
        if self.detector in BOX_THRESHOLDS:
            if self.detector_checkpoint is None:
                self.detector_checkpoint = DETECTOR_HUB_IDS[self.detector]
            if self.box_threshold is None:
                self.box_threshold = BOX_THRESHOLDS[self.detector]
        elif self.detector == "none":  # halc-lite: no detector, so its keys cannot split fingerprints
            self.detector_checkpoint = None
            self.box_threshold = None
        try:
            self.default_box = [float(v) for v in self.default_box]
        except (TypeError, ValueError):
            pass  # left as given: `check` refuses it as one line naming method.default_box
        self.exempt_words = list(self.exempt_words)
        self.add_words = list(self.add_words)
        self._tagger_obj: Any = None
        self._detector_obj: Any = None
        self._scorer_obj: Any = None

    # ---- identity ------------------------------------------------------------------------
    @property
    def label(self) -> str:
        return "halc-lite" if self.detector == "none" else "halc"

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.label  # §7.8: halc-lite is named so in results, run directories and tables

    def hyperparameters(self) -> dict[str, Any]:
        hp = super().hyperparameters()
        hp.pop("aux_cache_dir", None)  # where random checkpoints are cached changes nothing
        hp["dola"] = asdict(self.dola)
        return hp

    def implementation(self) -> dict[str, Any]:
        """What scored the candidates, for results.json: never HALC's own (unreproducible) score."""
        return {"halc_scorer": SCORER_LABELS.get(self.scorer, self.scorer)}

    # ---- validation (before any model is loaded) -----------------------------------------
    def check(self, gen: GenConfig) -> None:
        if gen.strategy != "greedy":
            raise ConfigError(
                "generation.strategy",
                f"halc runs its own BLIP-ranked search (method.beam_size), not {gen.strategy!r}",
                "set generation.strategy=greedy",
            )
        check_halc(self)
        if not self.verify:
            return
        self._check_tagger()
        if self.detector != "none":
            check_aux_checkpoint(
                self.detector_checkpoint,
                key="method.detector_checkpoint",
                model_type=DETECTOR_MODEL_TYPES[self.detector],
                hub_id=DETECTOR_HUB_IDS[self.detector],
                alternative=LITE_HINT,
            )
        check_aux_checkpoint(
            self.scorer_checkpoint, key="method.scorer_checkpoint", model_type=SCORER_MODEL_TYPE, hub_id=SCORER_HUB_ID
        )

    def _check_tagger(self) -> None:
        if self._tagger_obj is not None:
            return
        if self.tagger == "nltk":
            from vh_bench.nltk_env import NltkDataError, ensure_active

            try:
                ensure_active(full=False)  # files + tagger checksum; cheap
            except NltkDataError as exc:
                raise ConfigError("method.tagger", str(exc)) from exc
        else:
            import importlib.util

            if importlib.util.find_spec("spacy") is None:
                raise ConfigError("method.tagger", "spacy is not installed", "pip install spacy, or method.tagger=nltk")
            import spacy.util

            if not spacy.util.is_package("en_core_web_sm"):
                raise ConfigError("method.tagger", "spaCy model en_core_web_sm is not installed", "or method.tagger=nltk")

    # ---- components ----------------------------------------------------------------------
    def with_components(self, *, tagger: Any = None, detector: Any = None, scorer: Any = None) -> "HALC":
        """Use these objects instead of loading them (tests: scripted taggers/detectors/scorers)."""
        if tagger is not None:
            self._tagger_obj = tagger
        if detector is not None:
            self._detector_obj = detector
        if scorer is not None:
            self._scorer_obj = scorer
        return self

    def components(self, adapter: LlavaAdapter) -> tuple[Any, Any, Any]:
        """(tagger, detector, scorer), loaded once per method object (outside the timed region)."""
        if self._tagger_obj is None:
            self._check_tagger()
            self._tagger_obj = NltkTagger() if self.tagger == "nltk" else SpacyTagger()
        device = str(adapter.device)
        if self._detector_obj is None:
            if self.detector == "none":
                self._detector_obj = CentralBox(self.default_box)
            else:
                model, proc = load_aux(
                    str(self.detector_checkpoint),
                    key="method.detector_checkpoint",
                    model_type=DETECTOR_MODEL_TYPES[self.detector],
                    hub_id=DETECTOR_HUB_IDS[self.detector],
                    device=device,
                    cache_dir=self.aux_cache_dir,
                )
                if self.detector == "grounding_dino":
                    self._detector_obj = GroundingDinoDetector(
                        model, proc, box_threshold=float(self.box_threshold), text_threshold=float(self.text_threshold)
                    )
                else:
                    self._detector_obj = Owlv2Detector(model, proc, box_threshold=float(self.box_threshold))
        if self._scorer_obj is None:
            model, proc = load_aux(
                self.scorer_checkpoint,
                key="method.scorer_checkpoint",
                model_type=SCORER_MODEL_TYPE,
                hub_id=SCORER_HUB_ID,
                device=device,
                cache_dir=self.aux_cache_dir,
            )
            self._scorer_obj = BlipScorer(model, proc, mode=self.scorer)
        return self._tagger_obj, self._detector_obj, self._scorer_obj

    # ---- generation ----------------------------------------------------------------------
    def search(self, adapter: LlavaAdapter, inputs: ModelInputs, gen: GenConfig, seeds: SampleSeeds) -> "HalcSearch":
        """One sample's search object (components loaded first, outside the timed region)."""
        comps = self.components(adapter) if self.verify else (None, None, None)
        return HalcSearch(self, adapter, inputs, gen, seeds, *comps)

    def generate(self, adapter: LlavaAdapter, inputs: ModelInputs, gen: GenConfig, seeds: SampleSeeds) -> Generation:
        search = self.search(adapter, inputs, gen, seeds)
        with torch.inference_mode(), attention.control(adapter, None), kv_cache.track() as kv:  # plain attention
            ids = search.run()
            kv_bytes = kv.measure()  # the beams alive at the end (rolled-back or dropped ones not counted)
        return Generation(
            token_ids=ids,
            text=search._text(ids),  # placeholders never reach the text
            n_new_tokens=len(ids),
            t_prefill_s=search.timer.prefill_s,
            t_decode_s=search.timer.decode_s,
            extras=search.summary(),
            kv_cache=kv_bytes,
        )


# ---- the search --------------------------------------------------------------------------------
@dataclass
class Beam:
    """One hypothesis: committed ids V, the pending word W, the next token t, its own cache."""

    V: list[int]
    W: list[int]
    t: int
    cache: Any
    done: bool = False
    premature: int | None = None  # j* of this beam's last DoLa step (`dola.after_replace=reuse`)

    def clone(self) -> "Beam":
        return Beam(list(self.V), list(self.W), self.t, copy.deepcopy(self.cache), self.done, self.premature)


@dataclass
class Candidate:
    token: int
    text: str  # decode(V + [token]): what BLIP scores
    outcome: str  # keep | replace | delete
    d0: int = 0  # delete: first index of the span replaced by placeholders


@dataclass
class Verification:
    """A pending word checked at a word boundary: `candidates` empty means keep as is."""

    candidates: list[Candidate]


class HalcSearch:
    """One sample's HALC decoding (§7.2–7.7); `run()` returns the generated ids (placeholders incl.)."""

    def __init__(
        self,
        method: HALC,
        adapter: LlavaAdapter,
        inputs: ModelInputs,
        gen: GenConfig,
        seeds: SampleSeeds,
        tagger: Any,
        detector: Any,
        scorer: Any,
    ) -> None:
        if method.verify and inputs.image is None:
            raise ValueError("HALC needs ModelInputs.image (the original PIL image) for grounding and views")
        self.m, self.adapter, self.inputs, self.gen = method, adapter, inputs, gen
        self.tagger, self.detector, self.scorer = tagger, detector, scorer
        self.rng = seeds.python_rng("halc_skip")
        self.timer = SampleTimer(adapter.device)
        self.L = inputs.length
        self.eos = adapter.eos_token_id
        self.unk = adapter.unk_token_id
        self.tok = adapter.tokenizer
        d = method.dola
        self.dola = DolaHead(adapter, d.premature_layers, d.relative_top, d.norm_premature)
        # The image placeholder can never be produced: a context holding it cannot be re-fed with
        # pixel values (the FOV views), so it is excluded from every argmax HALC takes.
        self.banned = [adapter.image_token_id]
        self.dola.banned = self.banned
        self.starts = _word_starts(self.tok, self.eos, int(adapter.lm_head.out_features))
        self.views = ViewEncoder(adapter, inputs, cache_size=method.view_cache_size)
        self.det_session: Any = None
        self.score_session: Any = None
        self.stats: Counter = Counter()
        self.trace: list[dict[str, Any]] | None = None  # tests: set to [] to record every iteration

    # -- model calls --
    def _dola_forward(
        self, beam: Beam, ids: list[int] | torch.Tensor, pixel_values: torch.Tensor | None = None, *, reuse: bool = False
    ) -> int:
        if not isinstance(ids, torch.Tensor):
            ids = torch.tensor([ids], dtype=torch.long, device=self.adapter.device)
        out = self.adapter.forward(
            cache=beam.cache,
            input_ids=ids,
            pixel_values=pixel_values,
            output_hidden_states=True,
            vision_inputs=self.inputs.vision_inputs,  # read only with pixel_values (the prefill)
        )
        if reuse and beam.premature is not None:
            return self.dola.token_at(out, beam.premature)
        token = self.dola.token(out)
        beam.premature = self.dola.last_index
        return token

    def _decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def _text(self, ids: list[int]) -> str:
        return self.adapter.decode_text([i for i in ids if i != self.unk])

    # -- the loop --
    def run(self) -> list[int]:
        m = self.m
        self.timer.start()
        if m.verify:
            # Image-only work, once per sample: detector preprocessing (OWLv2: its whole image
            # side), BLIP image features and cross-attention K/V. Timed, as part of the prefill.
            self.det_session = self.detector.session(self.inputs.image)
            self.score_session = self.scorer.session(self.inputs.image)
            prepare = getattr(self.score_session, "prepare", None)
            if prepare is not None:
                prepare()
        beam = Beam([], [], 0, self.adapter.new_cache())
        beam.t = self._dola_forward(beam, self.inputs.input_ids, self.inputs.pixel_values)
        self.timer.first_token()
        beams = [beam]
        while not all(b.done for b in beams):
            for b in beams:
                if not b.done and b.cache.get_seq_length() != self.L + len(b.V) + len(b.W):
                    raise RuntimeError(
                        f"HALC bookkeeping: cache holds {b.cache.get_seq_length()} tokens, expected "
                        f"prompt {self.L} + V {len(b.V)} + W {len(b.W)}"
                    )
            if self.trace is not None:
                self.trace.append({"event": "iteration", "beams": [self._snapshot(b) for b in beams]})
            verifs: dict[int, Verification] = {}
            if m.verify:
                for i, b in enumerate(beams):
                    if not b.done and b.W and self.starts[b.t]:
                        verifs[i] = self._verify(b)
            beams = self._select(beams, verifs)
            for b in beams:
                if not b.done:
                    self._advance(b)
        self.timer.stop()
        return beams[0].V

    def _advance(self, b: Beam) -> None:
        """§7.2 steps 2–3: stop at EOS or length, else append t to W and run a DoLa step."""
        if b.t == self.eos or len(b.V) + len(b.W) + 1 > self.gen.max_new_tokens:
            b.V += b.W
            b.W = []
            if b.t == self.eos and len(b.V) + 1 <= self.gen.max_new_tokens:
                b.V.append(self.eos)
            b.done = True
            return
        b.W.append(b.t)
        b.t = self._dola_forward(b, [b.t])

    # -- verification (§7.2 word span, §7.3–7.6) --
    def word_span(self, b: Beam) -> tuple[int, int]:
        """(w_start, word_start): where W starts, and where its word starts (a continuation of an
        earlier correction starts at the last word-start token of V)."""
        w_start = len(b.V)
        if self.starts[b.W[0]]:
            return w_start, w_start
        word_start = 0
        for i in range(len(b.V) - 1, -1, -1):
            if self.starts[b.V[i]]:
                word_start = i
                break
        return w_start, word_start

    def _verify(self, b: Beam) -> Verification:
        m = self.m
        self.stats["verifications"] += 1
        w_start, word_start = self.word_span(b)
        entity = last_piece(self._decode(b.V[word_start:] + b.W))
        chk = object_test(
            entity, self.tagger, self.rng, skip_rate=m.skip_rate, exempt=m.exempt_words, add=m.add_words
        )
        if not chk.is_object:
            return Verification([])
        self.stats["objects"] += 1
        g = ground(
            self.det_session,
            chk.word,
            min_area=m.min_box_area,
            iou_dedup=m.box_iou_dedup,
            max_boxes=m.max_boxes,
            default_box=m.default_box,
        )
        self.stats[f"status_{g.status}"] += 1
        if g.status == "invalid":
            return Verification([])
        boxes = fov_boxes(g.box, m.num_fov, m.expand_ratio)
        logits = self.views.logits(boxes, b.V)
        pairs = rank_pairs(logits, m.num_pairs, m.divergence)
        tokens = contrast_candidates(logits, pairs, m.contrast_weight, banned=self.banned)
        deletable = (
            m.delete_undetected
            and g.status == "not-detected"
            and len(b.V) + 1 >= m.min_committed_before_delete
            and chk.word not in m.exempt_words
        )
        word_text = last_piece(self._decode(b.W)) if deletable else ""  # only a deletion compares it
        cands = []
        for c in tokens:
            outcome, d0 = ("replace", 0)
            if deletable:
                piece = last_piece(self._decode([c]))
                if piece == word_text or piece in word_text or word_text in piece:
                    outcome, d0 = "delete", (w_start if self.starts[c] else word_start)
            if outcome != "delete":
                outcome = "keep" if c == b.W[0] else "replace"
            cands.append(Candidate(c, self._text(b.V + [c]), outcome, d0))
        return Verification(cands)

    # -- selection and outcomes (§7.7) --
    def _select(self, beams: list[Beam], verifs: dict[int, Verification]) -> list[Beam]:
        if not any(v.candidates for v in verifs.values()):
            for i in verifs:
                self._keep(beams[i])
            return beams
        width = 2 * self.m.num_pairs
        entries: list[tuple[str, int, Candidate | None]] = []
        for i, b in enumerate(beams):
            v = verifs.get(i)
            if v is not None and v.candidates:
                entries += [(c.text, i, c) for c in v.candidates]
            else:
                entries += [(self._text(b.V + b.W), i, None)] * width
        texts = list(dict.fromkeys(e[0] for e in entries))
        if len(texts) > 1:
            self.stats["scorer_calls"] += 1
            by_text = dict(zip(texts, self.score_session.score(texts)))
        else:
            by_text = {texts[0]: 0.0}
        order = sorted(range(len(entries)), key=lambda k: -by_text[entries[k][0]])  # stable: ties → first
        picks: list[int] = []
        seen: set[str] = set()
        for k in order:
            if entries[k][0] not in seen:
                seen.add(entries[k][0])
                picks.append(k)
            if len(picks) == self.m.beam_size:
                break
        while len(picks) < self.m.beam_size:  # fewer distinct texts than beams: duplicate the best
            picks.append(order[0])
        # Copy every picked source before any outcome mutates one (a source may be picked twice).
        used: set[int] = set()
        new_beams = []
        for k in picks:
            src = entries[k][1]
            new_beams.append(beams[src] if src not in used else beams[src].clone())
            used.add(src)
        for k, nb in zip(picks, new_beams):
            src, cand = entries[k][1], entries[k][2]
            if cand is not None:
                self._apply(nb, cand)
            elif src in verifs:
                self._keep(nb)
        return new_beams

    def _snapshot(self, b: Beam) -> dict[str, Any]:
        return {"cache": b.cache.get_seq_length(), "V": list(b.V), "W": list(b.W), "t": b.t, "done": b.done}

    def _keep(self, b: Beam) -> None:
        self.stats["outcome_keep"] += 1
        b.V += b.W
        b.W = []

    def _apply(self, b: Beam, c: Candidate) -> None:
        if c.outcome == "keep":
            self._keep(b)
            return
        self.stats[f"outcome_{c.outcome}"] += 1
        if c.outcome == "replace":
            crop_cache_to(b.cache, self.L + len(b.V))  # back to the start of W
            if self.trace is not None:
                self.trace.append({"event": "replace", "token": c.token, **self._snapshot(b)})
            b.V.append(c.token)
            b.W = []
            if c.token == self.eos:
                b.done = True
                return
            b.t = self._dola_forward(b, [c.token], reuse=self.m.dola.after_replace == "reuse")
            return
        # delete: the word's span becomes <unk> placeholders that stay in the context (§7.7)
        w_start = len(b.V)
        n_del = (w_start - c.d0) + 1
        crop_cache_to(b.cache, self.L + c.d0)
        b.V = b.V[: c.d0] + [self.unk] * n_del
        b.W = []
        b.t = self._dola_forward(b, [self.unk] * n_del)
        if self.trace is not None:
            self.trace.append({"event": "delete", "d0": c.d0, "n_del": n_del, **self._snapshot(b)})

    def summary(self) -> dict[str, Any]:
        s = dict(sorted(self.stats.items()))
        s["view_forwards"] = self.views.n_forwards
        s["label"] = self.m.label
        return s


_WORD_STARTS: dict[tuple[int, int], tuple[Any, list[bool]]] = {}


def _word_starts(tokenizer: Any, eos: int, vocab_size: int) -> list[bool]:
    """Word-start table per tokenizer and lm_head size, built once (a 32k-entry list)."""
    key = (id(tokenizer), vocab_size)
    hit = _WORD_STARTS.get(key)
    if hit is None or hit[0] is not tokenizer:
        hit = (tokenizer, word_start_table(tokenizer, eos, vocab_size))
        _WORD_STARTS[key] = hit
    return hit[1]
