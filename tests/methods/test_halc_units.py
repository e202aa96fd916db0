"""HALC's pure pieces on hand-made inputs (methods.md §8.6): no model is loaded here."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from methods.halc_dola import code_jsd_to_mature, dola_scores, premature_indices, relative_top_filter
from methods.halc_fov import contrast_candidates, crop_views, expand_box, fov_boxes, pair_divergence, pixel_box, rank_pairs
from methods.halc_grounding import DEFAULT_BOX, choose_box, filter_boxes, ground, iou, normalise_boxes, round3
from methods.halc_words import ADD_WORDS, EXEMPT_WORDS, normalise_entity, object_test, word_start_table
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError


class ScriptedTagger:
    name = "scripted"

    def __init__(self, nouns: set[str]) -> None:
        self.nouns = nouns
        self.asked: list[str] = []

    def is_noun(self, word: str) -> bool:
        self.asked.append(word)
        return word in self.nouns


# ---- DoLa (§7.1) ---------------------------------------------------------------------------------
def _reference_divergence(lm: list[float], lj: list[float]) -> float:
    """0.5·(KL(M‖p_M) + KL(M‖p_j)) / V with explicit loops (independent of the implementation)."""
    pm = [math.exp(x) / sum(math.exp(y) for y in lm) for x in lm]
    pj = [math.exp(x) / sum(math.exp(y) for y in lj) for x in lj]
    mix = [(a + b) / 2 for a, b in zip(pm, pj)]
    kl_m = sum(m * math.log(m / a) for m, a in zip(mix, pm))
    kl_j = sum(m * math.log(m / b) for m, b in zip(mix, pj))
    return 0.5 * (kl_m + kl_j) / len(lm)


def test_dola_layer_choice_maximises_the_codes_divergence() -> None:
    mature = [2.0, 1.0, 0.0, -1.0]
    cands = [[2.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 1.0, 2.0], [0.5, 0.2, 0.1, 0.0]]
    got = code_jsd_to_mature(torch.tensor(mature), torch.tensor(cands))
    want = [_reference_divergence(mature, c) for c in cands]
    assert got.tolist() == pytest.approx(want, rel=1e-5, abs=1e-7)
    assert got[0].item() == pytest.approx(0.0, abs=1e-7)
    step = dola_scores(torch.tensor(mature), torch.tensor(cands), [0, 2, 4, 6], 0.1)
    assert step.premature_index == 4  # the reversed distribution is the farthest
    # Ties go to the lowest layer.
    tied = dola_scores(torch.tensor(mature), torch.tensor([cands[2], cands[2]]), [2, 6], 0.1)
    assert tied.premature_index == 2


def test_relative_top_keeps_exactly_the_plausible_tokens() -> None:
    logits = torch.tensor([2.0, 1.0, -0.30, -0.31, -1.0])  # cutoff: l ≥ 2 + ln 0.1 = −0.3026
    out = relative_top_filter(logits, 0.1)
    lp = torch.log_softmax(logits, dim=-1)
    assert torch.isfinite(out).tolist() == [True, True, True, False, False]
    assert torch.equal(out[:3], lp[:3])
    assert torch.isfinite(relative_top_filter(logits, 0.0)).all()  # 0 disables the cutoff


def test_dola_contrast_and_its_greedy_reductions() -> None:
    mature = torch.tensor([2.0, 1.9, 0.0, -5.0])
    premature = torch.tensor([[3.0, 0.0, 0.0, 0.0]])
    step = dola_scores(mature, premature, [0], 0.1)
    assert int(step.scores.argmax()) == 1 != int(mature.argmax())  # the contrast changes the token
    assert torch.isfinite(step.scores).tolist() == [True, True, True, False]  # 0 ≥ 2 + ln 0.1 > −5
    base = torch.log_softmax(premature[0], dim=-1)
    final = torch.log_softmax(mature, dim=-1)
    assert torch.allclose(step.scores[:3], final[:3] - base[:3])
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        m = torch.randn(50, generator=g) * 3
        # Zero premature logits: the base is constant, so DoLa is greedy (§8.6).
        assert int(dola_scores(m, torch.zeros(3, 50), [0, 2, 4], 0.1).scores.argmax()) == int(m.argmax())
        # Premature = mature: final − base is 0 on the plausible set, so the pick is the lowest
        # plausible id; with relative_top = 1 only the argmax is plausible and DoLa is greedy.
        assert int(dola_scores(m, m[None], [4], 1.0).scores.argmax()) == int(m.argmax())
        same = dola_scores(m, m[None], [4], 0.1)
        assert int(same.scores.argmax()) == int(torch.isfinite(same.scores).nonzero()[0])


def test_premature_layer_indices() -> None:
    assert premature_indices("even", 32) == list(range(0, 31, 2))
    assert premature_indices("even", 4) == [0, 2]
    assert premature_indices([0, -1, -2], 4) == [0, 4, 3]
    with pytest.raises(ConfigError, match="method.dola.premature_layers"):
        premature_indices([5], 4)


# ---- words (§7.2–7.3) -------------------------------------------------------------------------------
def test_entity_normalisation_and_the_list_rules() -> None:
    tagger = ScriptedTagger({"dog", "cat", "toaster", "man"})
    rng = random.Random(0)
    assert normalise_entity("dogs.") == "dog"
    assert normalise_entity("(dogs)") == "(dog"  # `(` is not stripped, `)` is; then the final s
    assert normalise_entity("'bus',") == "bu"  # the code's crude singularisation, reproduced
    assert normalise_entity(".,") == ""
    assert object_test("dogs.", tagger, rng, skip_rate=0).is_object
    assert object_test("dog.,", tagger, rng, skip_rate=0).pos == "SKIP"  # "dog." after stripping
    cat = object_test("cat", tagger, rng, skip_rate=0)
    assert cat.pos == "SKIP" and not cat.is_object  # exempt
    toaster = object_test("toaster", tagger, rng, skip_rate=0)
    assert toaster.pos == "ADD" and toaster.is_object  # ADD overrides the exempt SKIP
    assert object_test("sink", ScriptedTagger(set()), rng, skip_rate=0).pos == "ADD"
    assert object_test(".", tagger, rng, skip_rate=0).pos == "PUNC"
    assert object_test("runs", tagger, rng, skip_rate=0).pos == "OTHER"
    assert "cat" in EXEMPT_WORDS and "toaster" in ADD_WORDS and len(EXEMPT_WORDS) == 31 and len(ADD_WORDS) == 10


def test_skip_rate_draws_come_from_the_per_sample_generator() -> None:
    tagger = ScriptedTagger({"dog"})
    words = ["dog", "a", "dog", "the", "dog", "dog", "red", "dog"] * 4

    def run(sample_id: str) -> list[str]:
        rng = SampleSeeds(0, sample_id).python_rng("halc_skip")
        out = [object_test(w, tagger, rng, skip_rate=0.5).pos for w in words]
        # Exactly one draw per call, object or not: the next draw is the (n+1)-th of a fresh stream.
        fresh = SampleSeeds(0, sample_id).python_rng("halc_skip")
        for _ in words:
            fresh.random()
        assert rng.random() == fresh.random()
        return out

    a1, a2, b = run("coco:1"), run("coco:1"), run("coco:2")
    assert a1 == a2 and a1 != b
    assert "SKIP" in a1 and "NOUN" in a1
    assert all(p in ("SKIP", "OTHER") for w, p in zip(words, a1) if w != "dog")


def test_object_words_in_tagged_sentences() -> None:
    """The real NLTK tagger on isolated words, as HALC tags them (quirks of the crude
    singularisation included: "has" → "ha" is a noun)."""
    from methods.halc_words import NltkTagger

    try:
        tagger = NltkTagger()
    except Exception as exc:  # noqa: BLE001 - the data root is helper-owned setup
        pytest.skip(f"NLTK data not set up: {exc}")
    sentences = {
        "A man riding a horse next to a red car.": ["man", "car."],
        "Two dogs are sitting on the couch, near a table.": ["dogs", "couch,", "table."],
        "The kitchen has a toaster and a sink.": ["kitchen", "has", "toaster", "sink."],
    }
    for sentence, objects in sentences.items():
        rng = random.Random(0)
        got = [w for w in sentence.split(" ") if object_test(w, tagger, rng, skip_rate=0.0).is_object]
        assert got == objects, sentence


class _Tok:
    def __init__(self, pieces: list[str]) -> None:
        self.pieces = pieces

    def __len__(self) -> int:
        return len(self.pieces)

    def convert_ids_to_tokens(self, ids):
        return [self.pieces[i] for i in ids]


def test_word_start_table() -> None:
    sp = _Tok(["<unk>", "<s>", "</s>", "▁a", "▁dog", "gie", "s", ".", "▁.", "'s"])
    assert word_start_table(sp, 2) == [False, False, True, True, True, False, False, True, True, False]
    wordlevel = _Tok(["<unk>", "<s>", "</s>", "dog", "s"])
    assert word_start_table(wordlevel, 2) == [True] * 5
    # An lm_head padded past the tokenizer: the extra ids follow the tokenizer's rule.
    assert word_start_table(wordlevel, 2, 7) == [True] * 7
    assert word_start_table(sp, 2, 12)[10:] == [False, False]


# ---- grounding (§7.4) --------------------------------------------------------------------------------
def test_box_post_filter_and_status_rules() -> None:
    small = (0.1, 0.1, 0.15, 0.15)  # area 0.0025 < 0.01 → dropped
    a = (0.1, 0.1, 0.5, 0.5)
    a_dup = (0.11, 0.11, 0.5, 0.5)  # IoU with a ≈ 0.95 → dropped (lower score)
    b = (0.5, 0.5, 0.7, 0.9)
    kept = filter_boxes([small, a_dup, a, b], [0.99, 0.5, 0.9, 0.6], min_area=0.01, iou_dedup=0.6)
    assert kept == [a, b]  # by score, dedup, area
    g = choose_box(kept, max_boxes=3, default_box=DEFAULT_BOX)
    assert g.status == "detected" and g.box == b  # the smallest area wins (0.08 < 0.16)
    four = [(0.0, 0.0, 0.2, 0.2), (0.3, 0.0, 0.5, 0.2), (0.6, 0.0, 0.8, 0.2), (0.0, 0.5, 0.2, 0.7)]
    assert choose_box(four, max_boxes=3, default_box=DEFAULT_BOX).status == "invalid"
    assert choose_box(four[:3], max_boxes=3, default_box=DEFAULT_BOX).status == "detected"
    none = choose_box([], max_boxes=3, default_box=DEFAULT_BOX)
    assert none.status == "not-detected" and none.box == (0.2, 0.2, 0.8, 0.8)
    assert iou(a, a) == 1.0 and iou(a, b) == 0.0


def test_box_normalisation_rounds_half_up_and_clips() -> None:
    assert normalise_boxes([[-10.0, 20.0, 330.0, 120.0]], 320, 240) == [(0.0, 0.083, 1.0, 0.5)]
    assert round3(0.0125) == 0.013 and round3(0.0124999) == 0.012


class _ScriptedDetection:
    def __init__(self, boxes, scores) -> None:
        self.result = (boxes, scores)
        self.asked: list[str] = []

    def detect(self, word: str):
        self.asked.append(word)
        return self.result


def test_ground_applies_the_filter_before_counting() -> None:
    # Five raw boxes, two of them tiny and one a duplicate: three remain → detected, not invalid.
    raw = [(0.0, 0.0, 0.05, 0.05), (0.0, 0.0, 0.5, 0.5), (0.01, 0.0, 0.5, 0.5), (0.6, 0.6, 0.9, 0.9), (0.9, 0.9, 0.95, 0.95)]
    det = _ScriptedDetection(raw, [0.9, 0.8, 0.7, 0.6, 0.5])
    g = ground(det, "dog", min_area=0.01, iou_dedup=0.6, max_boxes=3, default_box=DEFAULT_BOX)
    assert g.status == "detected" and g.boxes == [raw[1], raw[3]] and g.box == raw[3]
    assert det.asked == ["dog"]


# ---- fields of view (§7.5) -------------------------------------------------------------------------
def test_fov_boxes_expand_exponentially_and_clip() -> None:
    views = fov_boxes([0.4, 0.4, 0.6, 0.6], 4, 0.6)
    want = [(0.46, 0.46, 0.54, 0.54), (0.4, 0.4, 0.6, 0.6), (0.34, 0.34, 0.66, 0.66), (0.244, 0.244, 0.756, 0.756)]
    for got, w in zip(views, want):
        assert got == pytest.approx(w, abs=1e-12)
    corner = fov_boxes([0.0, 0.0, 0.5, 0.5], 4, 0.6)
    assert corner[2] == pytest.approx((0.0, 0.0, 0.65, 0.65), abs=1e-12)
    assert corner[3] == pytest.approx((0.0, 0.0, 0.845, 0.845), abs=1e-12)
    assert fov_boxes([0.4, 0.4, 0.6, 0.6], 4, 0.9)[0] == pytest.approx(expand_box([0.4, 0.4, 0.6, 0.6], -0.8))
    assert len(fov_boxes([0.4, 0.4, 0.6, 0.6], 6, 0.6)) == 6


def test_fov_crops_are_clipped_pixel_boxes() -> None:
    assert pixel_box((0.244, 0.244, 0.756, 0.756), 320, 240) == (78, 59, 242, 181)
    assert pixel_box((0.0, 0.0, 0.845, 0.845), 320, 240) == (0, 0, 270, 203)
    assert pixel_box((0.5, 0.5, 0.5, 0.5), 320, 240) == (160, 120, 161, 121)  # ≥ 1 px per side
    assert pixel_box((0.999, 0.999, 1.0, 1.0), 320, 240) == (319, 239, 320, 240)  # inside the image
    arr = np.arange(240 * 320 * 3, dtype=np.uint32).reshape(240, 320, 3) % 251
    image = Image.fromarray(arr.astype(np.uint8))
    boxes = fov_boxes([0.4, 0.3, 0.7, 0.9], 4, 0.6)
    for b, crop in zip(boxes, crop_views(image, boxes)):
        x0, y0, x1, y1 = pixel_box(b, 320, 240)
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
        assert crop.size == (x1 - x0, y1 - y0)
        assert np.array_equal(np.asarray(crop), np.asarray(image)[y0:y1, x0:x1])


# ---- divergence, pairs, contrast (§7.6) --------------------------------------------------------
def test_pair_divergence_is_the_codes_not_the_textbook_jsd() -> None:
    p, q = torch.log(torch.tensor([0.5, 0.5])), torch.log(torch.tensor([0.9, 0.1]))
    assert pair_divergence(p, q, "halc").item() == pytest.approx(0.117973, abs=1e-6)
    assert pair_divergence(p, q, "jsd").item() == pytest.approx(0.101749, abs=1e-6)
    assert pair_divergence(p, p, "halc").item() == pytest.approx(0.0, abs=1e-7)
    # The code's quantity as HALC computes it: F.kl_div(log p_i, M, batchmean) per pair.
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 30, generator=g), torch.randn(1, 30, generator=g)
    mix = 0.5 * (a.softmax(-1) + b.softmax(-1))
    ref = 0.5 * (
        torch.nn.functional.kl_div(a.log_softmax(-1), mix, reduction="batchmean")
        + torch.nn.functional.kl_div(b.log_softmax(-1), mix, reduction="batchmean")
    )
    assert pair_divergence(a[0], b[0], "halc").item() == pytest.approx(ref.item(), rel=1e-5)


def test_pair_ranking_and_candidate_order() -> None:
    views = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 5.0, 0.0]])
    # D(2,3) is largest; D(0,2) = D(0,3) = D(1,2) = D(1,3) tie → the lexicographically smallest.
    pairs = rank_pairs(views, 2)
    assert pairs == [(2, 3), (0, 2)]
    assert rank_pairs(views, 6)[-1] == (0, 1)  # identical views: no divergence, last
    # Pair (i, j): argmax(l_j − w·l_i), then argmax(l_i − w·l_j).
    assert contrast_candidates(views, pairs, 0.05) == [1, 0, 0, 1]


def test_contrastive_combination_weight() -> None:
    views = torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.9, 0.0]])
    # argmax(l_1 − w·l_0): w = 0.05 → [0.85, 0.9, 0] → 1; w = 0 → plain argmax of view 1 → 0.
    assert contrast_candidates(views, [(0, 1)], 0.05) == [1, 0]
    assert contrast_candidates(views, [(0, 1)], 0.0) == [0, 0]
    assert contrast_candidates(views, [(0, 1)], 0.05, banned=[1]) == [0, 0]
