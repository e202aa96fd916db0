"""HALC's search on the tiny LLaVA with scripted components (methods.md §8.6).

Scripted taggers, detectors, scorers (and, for the bookkeeping tests, a scripted DoLa token
stream and scripted candidates) drive the logic; the LLaVA forwards and caches are real.
"""

from __future__ import annotations

import torch
import pytest

import methods.halc as halc_mod
from methods.halc import HALC, Beam, Candidate, HalcSearch, Verification
from methods.halc_dola import DolaHead
from methods.halc_fov import ViewEncoder, fov_boxes
from methods.halc_grounding import CentralBox
from methods.vanilla import Vanilla
from vh_bench.decoding import attention
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.records import GenConfig


class Tagger:
    name = "scripted"

    def __init__(self, nouns: set[str] | None = None) -> None:
        self.nouns = nouns  # None: every word is a noun
        self.asked: list[str] = []

    def is_noun(self, word: str) -> bool:
        self.asked.append(word)
        return self.nouns is None or word in self.nouns


class Detector:
    """Scripted detections: a queue of (boxes, scores), or one answer for every word."""

    kind = "scripted"

    def __init__(self, *results) -> None:
        self.results = list(results)
        self.asked: list[str] = []

    def session(self, image):
        return self

    def detect(self, word: str):
        self.asked.append(word)
        return self.results.pop(0) if len(self.results) > 1 else self.results[0]


DETECTED = ([(0.3, 0.3, 0.6, 0.7)], [0.9])
NOTHING = ([], [])


class Scorer:
    """`prefer`: a queue of words; the text ending in the next one scores 1. Else a fixed hash."""

    def __init__(self, prefer: list[str] | None = None) -> None:
        self.prefer = prefer
        self.calls: list[list[str]] = []

    def session(self, image):
        return self

    def score(self, texts):
        self.calls.append(list(texts))
        if self.prefer is not None:
            want = self.prefer.pop(0)
            return [1.0 if t.split(" ")[-1] == want else 0.0 for t in texts]
        return [(sum(map(ord, t)) % 97) / 97 for t in texts]


def _ids(adapter, words: list[str]) -> list[int]:
    ids = [adapter.tokenizer.convert_tokens_to_ids(w) for w in words]
    assert adapter.unk_token_id not in ids, words
    return ids


def _halc(**kw) -> HALC:
    return HALC(**{"detector_checkpoint": "random:tiny", "scorer_checkpoint": "random:tiny", **kw})


def _run(method: HALC, adapter, inputs, max_new: int = 12, sample: str = "s", trace: bool = False):
    search = method.search(adapter, inputs, GenConfig(max_new_tokens=max_new), SampleSeeds(0, sample))
    if trace:
        search.trace = []
    with torch.inference_mode(), attention.control(adapter, None):
        ids = search.run()
    return ids, search


# ---- reductions --------------------------------------------------------------------------------
def _dola_reference(adapter, inputs, max_new: int) -> list[int]:
    head = DolaHead(adapter, "even", 0.1, False)
    head.banned = [adapter.image_token_id]
    cache = adapter.new_cache()
    with torch.inference_mode(), attention.control(adapter, None):
        out = adapter.forward(
            cache=cache, input_ids=inputs.input_ids, pixel_values=inputs.pixel_values, output_hidden_states=True
        )
        toks = [head.token(out)]
        while toks[-1] != adapter.eos_token_id and len(toks) < max_new:
            ids = torch.tensor([[toks[-1]]])
            toks.append(head.token(adapter.forward(cache=cache, input_ids=ids, output_hidden_states=True)))
    return toks


def test_without_verification_halc_is_its_dola_base(tiny_adapter, inputs) -> None:
    gen = _halc(verify=False).generate(tiny_adapter, inputs, GenConfig(max_new_tokens=16), SampleSeeds(0, "x"))
    assert gen.token_ids == _dola_reference(tiny_adapter, inputs, 16)
    assert gen.n_new_tokens == len(gen.token_ids) == 16
    assert gen.t_prefill_s > 0 and gen.t_decode_s > 0
    greedy = Vanilla().generate(tiny_adapter, inputs, GenConfig(max_new_tokens=16), SampleSeeds(0, "x"))
    assert gen.token_ids != greedy.token_ids  # the layer contrast is active on this model


def test_dola_with_zero_premature_logits_is_greedy(tiny_adapter, inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    def zeros(self, hidden_states):
        return torch.zeros(len(self.layer_ids), self.adapter.lm_head.out_features)

    monkeypatch.setattr(DolaHead, "premature_logits", zeros)
    gen = _halc(verify=False).generate(tiny_adapter, inputs, GenConfig(max_new_tokens=16), SampleSeeds(0, "x"))
    greedy = Vanilla().generate(tiny_adapter, inputs, GenConfig(max_new_tokens=16), SampleSeeds(0, "x"))
    assert gen.token_ids == greedy.token_ids


def test_premature_equal_to_mature_with_relative_top_one_is_greedy(tiny_adapter, inputs) -> None:
    m = _halc(verify=False, dola={"premature_layers": [-1], "relative_top": 1.0})
    gen = m.generate(tiny_adapter, inputs, GenConfig(max_new_tokens=12), SampleSeeds(0, "x"))
    greedy = Vanilla().generate(tiny_adapter, inputs, GenConfig(max_new_tokens=12), SampleSeeds(0, "x"))
    assert gen.token_ids == greedy.token_ids


# ---- views -----------------------------------------------------------------------------------------
def test_batched_views_equal_separate_forwards(tiny_adapter, inputs) -> None:
    boxes = fov_boxes([0.3, 0.2, 0.6, 0.7], 4, 0.6)
    context = _ids(tiny_adapter, ["a", "man", "sitting", "near", "hot", "dog"])
    with torch.inference_mode():
        enc = ViewEncoder(tiny_adapter, inputs, cache_size=0)
        batched = enc.logits(boxes, context)
        pv, extra = enc.pixel_values(boxes)
        assert extra == {}  # LLaVA-1.5's vision forward needs nothing beside the pixels
        assert pv.shape[0] == 4 and not torch.equal(pv[0], pv[3])
        ids = torch.cat([inputs.input_ids, torch.tensor([context])], dim=1)
        for v in range(4):
            out = tiny_adapter.forward(cache=tiny_adapter.new_cache(), input_ids=ids, pixel_values=pv[v : v + 1])
            single = tiny_adapter.last_logits(out)[0]
            assert torch.allclose(batched[v], single, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(batched[0], batched[3], atol=1e-2)  # the views do differ
        # A kept view cache extended (and rolled back) incrementally gives the same logits.
        cached = ViewEncoder(tiny_adapter, inputs, cache_size=2)
        cached.logits(boxes, context[:3])
        assert torch.allclose(cached.logits(boxes, context), batched, rtol=1e-4, atol=1e-4)
        other = context[:2] + _ids(tiny_adapter, ["on", "the"])
        fresh = enc.logits(boxes, other)
        assert torch.allclose(cached.logits(boxes, other), fresh, rtol=1e-4, atol=1e-4)
        assert torch.equal(cached.logits(boxes, other), cached.logits(boxes, other))
        L = inputs.length
        assert enc.n_forwards == 2 and enc.n_fed == 4 * (L + 6) + 4 * (L + 4)
        # prefill of L+3, then +3 tokens, then back to the common prefix (2) and +2 tokens; no more.
        assert cached.n_forwards == 3 and cached.n_fed == 4 * (L + 3) + 4 * 3 + 4 * 2


# ---- bookkeeping -----------------------------------------------------------------------------------
class Script:
    """Replaces the DoLa token choice with a scripted stream (the forwards still run)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids, self.i = ids, 0

    def __call__(self, head, out) -> int:
        tok = self.ids[self.i]
        self.i += 1
        return tok


@pytest.fixture
def scripted(tiny_adapter, monkeypatch: pytest.MonkeyPatch):
    """Install a token script, scripted candidates and a word-start table where "dog" continues a word."""

    def install(words: list[str], candidate_lists: list[list[str]]):
        script = Script(_ids(tiny_adapter, words[:-1]) + [tiny_adapter.eos_token_id] if words[-1] == "</s>" else _ids(tiny_adapter, words))
        monkeypatch.setattr(DolaHead, "token", lambda head, out: script(head, out))
        queue = [_ids(tiny_adapter, c) for c in candidate_lists]
        monkeypatch.setattr(halc_mod, "contrast_candidates", lambda *a, **k: queue.pop(0))
        starts = [True] * len(tiny_adapter.tokenizer)
        starts[tiny_adapter.tokenizer.convert_tokens_to_ids("dog")] = False
        monkeypatch.setattr(halc_mod, "_word_starts", lambda tok, eos, n: starts)
        return script, queue

    return install


def _check_trace(search: HalcSearch) -> None:
    iters = [e for e in search.trace if e["event"] == "iteration"]
    assert iters
    for e in iters:
        for b in e["beams"]:
            if not b["done"]:
                assert b["cache"] == search.L + len(b["V"]) + len(b["W"])


def test_multi_token_word_kept_whole(tiny_adapter, inputs, scripted) -> None:
    words = ["a", "man", "sitting", "near", "hot", "dog", "on", "the", "chair", "</s>"]
    scripted(words, [["hot", "cat", "chair", "man"]])
    tagger, scorer = Tagger({"dog"}), Scorer(prefer=["hot"])
    m = _halc().with_components(tagger=tagger, detector=Detector(DETECTED), scorer=scorer)
    ids, search = _run(m, tiny_adapter, inputs, trace=True)
    assert ids == _ids(tiny_adapter, words[:-1]) + [tiny_adapter.eos_token_id]
    _check_trace(search)
    assert "dog" in tagger.asked and len(scorer.calls) == 1
    assert scorer.calls[0][0] == "a man sitting near hot"  # decode(V + [c]) of the first candidate
    assert search.stats["outcome_keep"] >= 1 and search.stats["status_detected"] == 1


def test_replace_then_delete_keep_the_cache_in_step(tiny_adapter, inputs, scripted) -> None:
    # After replace(cat) the script continues the word with "dog" (a continuation token); that
    # word is then not detected and its candidate repeats it: deleted, span = [cat, dog].
    # Script: the "on" after "hot dog" is discarded by the replace; "on" after the placeholders.
    words = ["a", "man", "sitting", "near", "hot", "dog", "on", "dog", "on", "on", "the", "</s>"]
    scripted(words, [["hot", "cat", "chair", "man"], ["dog", "man", "cat", "chair"]])
    m = _halc(min_committed_before_delete=2).with_components(
        tagger=Tagger({"dog"}), detector=Detector(DETECTED, NOTHING), scorer=Scorer(prefer=["cat", "dog"])
    )
    ids, search = _run(m, tiny_adapter, inputs, trace=True)
    unk, L = tiny_adapter.unk_token_id, search.L
    a_man_sitting_near = _ids(tiny_adapter, ["a", "man", "sitting", "near"])
    assert ids == a_man_sitting_near + [unk, unk] + _ids(tiny_adapter, ["on", "the"]) + [tiny_adapter.eos_token_id]
    _check_trace(search)
    replace = [e for e in search.trace if e["event"] == "replace"]
    delete = [e for e in search.trace if e["event"] == "delete"]
    assert len(replace) == 1 and replace[0]["cache"] == L + 4 and replace[0]["V"] == a_man_sitting_near
    assert len(delete) == 1 and delete[0]["d0"] == 4 and delete[0]["n_del"] == 2
    assert delete[0]["cache"] == L + 6 and delete[0]["V"][4:] == [unk, unk]  # placeholders in the context
    assert search.stats["outcome_replace"] == 1 and search.stats["outcome_delete"] == 1


def test_generation_text_hides_placeholders(tiny_adapter, inputs, scripted) -> None:
    words = ["a", "man", "sitting", "near", "hot", "dog", "on", "dog", "on", "on", "the", "</s>"]
    scripted(words, [["hot", "cat", "chair", "man"], ["dog", "man", "cat", "chair"]])
    m = _halc(min_committed_before_delete=2).with_components(
        tagger=Tagger({"dog"}), detector=Detector(DETECTED, NOTHING), scorer=Scorer(prefer=["cat", "dog"])
    )
    gen = m.generate(tiny_adapter, inputs, GenConfig(max_new_tokens=12), SampleSeeds(0, "s"))
    assert gen.text == "a man sitting near on the"
    assert gen.n_new_tokens == len(gen.token_ids) == 9 and gen.token_ids.count(tiny_adapter.unk_token_id) == 2
    assert gen.extras["outcome_delete"] == 1 and gen.extras["label"] == "halc"


def test_word_span_of_a_continuation(tiny_adapter, inputs, scripted) -> None:
    scripted(["a"], [])
    m = _halc().with_components(tagger=Tagger(), detector=Detector(DETECTED), scorer=Scorer())
    search = m.search(tiny_adapter, inputs, GenConfig(max_new_tokens=8), SampleSeeds(0, "s"))
    a, cat, dog, on = _ids(tiny_adapter, ["a", "cat", "dog", "on"])
    assert search.word_span(Beam([a, cat], [dog], on, None)) == (2, 1)  # continues the word of "cat"
    assert search.word_span(Beam([a, cat], [on, dog], on, None)) == (2, 2)
    assert search.word_span(Beam([dog, dog], [dog], on, None)) == (2, 0)  # no word start at all


def test_lite_never_deletes_and_is_labelled(tiny_adapter, inputs, scripted) -> None:
    words = ["a", "man", "sitting", "near", "hot", "dog", "on", "the", "</s>"]
    scripted(words, [["dog", "dog", "dog", "dog"]])
    m = _halc(detector="none", min_committed_before_delete=0).with_components(
        tagger=Tagger({"dog"}), scorer=Scorer(prefer=["dog"])
    )
    assert m.label == m.name == "halc-lite" and m.fingerprint()["method"] == "halc-lite"
    assert isinstance(m.components(tiny_adapter)[1], CentralBox)
    ids, search = _run(m, tiny_adapter, inputs, trace=True)
    assert search.stats["outcome_delete"] == 0 and search.stats["status_detected"] == 1
    assert tiny_adapter.unk_token_id not in ids and search.stats["outcome_replace"] == 1
    assert _halc().label == "halc"


def test_the_invariant_check_fires(tiny_adapter, inputs, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_keep(self, b):
        b.V += b.W + [b.W[-1]]  # commits a token the cache never saw
        b.W = []

    monkeypatch.setattr(HalcSearch, "_keep", broken_keep)
    m = _halc().with_components(tagger=Tagger(set()), detector=Detector(DETECTED), scorer=Scorer())
    with pytest.raises(RuntimeError, match="HALC bookkeeping"):
        _run(m, tiny_adapter, inputs)


# ---- beams ----------------------------------------------------------------------------------------
def test_beam_selection_distinct_texts_and_duplicates(tiny_adapter, inputs) -> None:
    scores = {"t1": 0.9, "t2": 0.8, "t3": 0.3, "t4": 0.1, "u": 0.85, "w": 0.2}

    class Fixed:
        def score(self, texts):
            return [scores[t] for t in texts]

    m = _halc(beam_size=3).with_components(tagger=Tagger(), detector=Detector(DETECTED), scorer=Scorer())
    search = m.search(tiny_adapter, inputs, GenConfig(max_new_tokens=8), SampleSeeds(0, "s"))
    search.score_session = Fixed()
    search._text = lambda ids: {1: "u", 2: "w"}[ids[0]]  # texts of the unchanged beams
    beams = [Beam([0], [5], 6, tiny_adapter.new_cache()), Beam([1], [], 6, tiny_adapter.new_cache()), Beam([2], [], 6, tiny_adapter.new_cache())]
    cands = [Candidate(5, t, "keep") for t in ("t1", "t1", "t2", "t4")]  # "t1" twice: distinct texts only
    new = search._select(beams, {0: Verification(cands)})
    assert [b.V for b in new] == [[0, 5], [1], [0, 5]]  # t1, u, t2: distinct, by score
    assert new[0] is beams[0] and new[2] is not beams[0] and new[2].cache is not beams[0].cache
    # Fewer distinct texts than beams: the best one fills the gap.
    one = [Beam([0], [5], 6, tiny_adapter.new_cache())]
    new = search._select(one, {0: Verification([Candidate(5, "t2", "keep"), Candidate(5, "t3", "keep")] * 2)})
    assert len(new) == 3 and [b.V for b in new] == [[0, 5]] * 3 and len({id(b) for b in new}) == 3
    # No beam verified an object: the beams stay as they are.
    assert search._select(beams, {1: Verification([])}) is beams


def test_beam_three_runs_and_is_deterministic(tiny_adapter, inputs) -> None:
    def run():
        m = _halc(beam_size=3, detector="none").with_components(tagger=Tagger(), scorer=Scorer())
        ids, search = _run(m, tiny_adapter, inputs, max_new=10, trace=True)
        _check_trace(search)
        return ids, search

    (a, sa), (b, _) = run(), run()
    assert a == b and 1 <= len(a) <= 10
    widths = [len(e["beams"]) for e in sa.trace if e["event"] == "iteration"]
    assert widths[0] == 1 and max(widths) == 3  # one beam until the first ranked verification


def test_skip_draws_are_per_sample(tiny_adapter, inputs) -> None:
    def outputs(order: list[str]) -> dict[str, list[int]]:
        m = _halc(detector="none", skip_rate=0.5).with_components(tagger=Tagger(), scorer=Scorer())
        return {s: _run(m, tiny_adapter, inputs, max_new=6, sample=s)[0] for s in order}

    first, second = outputs(["a", "b", "c"]), outputs(["c", "a"])
    assert first["a"] == second["a"] and first["c"] == second["c"]


def test_shape_fidelity_at_336_px(tiny_adapter_336, test_image, caption_prompt) -> None:
    inputs = tiny_adapter_336.prepare(test_image, caption_prompt)
    assert inputs.n_image_tokens == 576
    m = _halc().with_components(tagger=Tagger(), detector=Detector(NOTHING), scorer=Scorer())
    ids, search = _run(m, tiny_adapter_336, inputs, max_new=8, trace=True)
    _check_trace(search)
    assert search.stats["status_not-detected"] >= 1 and search.views.n_forwards >= 1


# ---- shape variants: GQA and every prompt template (methods.md §8) -------------------------------
@pytest.mark.parametrize(
    ("template", "kv_heads"), [("hf", 2), ("vicuna_v1", 4), ("llava_v1", 4), ("halc", 4)]
)
def test_variants_gqa_and_templates(template: str, kv_heads: int, test_image, caption_prompt) -> None:
    from tests.conftest import tiny_checkpoint
    from vh_bench.models.llava import LlavaAdapter

    adapter = LlavaAdapter.load(tiny_checkpoint(text_kv_heads=kv_heads), prompt_template=template)
    inputs = adapter.prepare(test_image, caption_prompt)
    m = _halc().with_components(tagger=Tagger(), detector=Detector(NOTHING), scorer=Scorer())
    ids, search = _run(m, adapter, inputs, max_new=6, trace=True)
    _check_trace(search)
    assert search.stats["status_not-detected"] >= 1 and 1 <= len(ids) <= 6
    gen = _halc(verify=False).generate(adapter, inputs, GenConfig(max_new_tokens=6), SampleSeeds(0, "x"))
    assert gen.token_ids == _dola_reference(adapter, inputs, 6)
