"""HALC inputs the search must get right (methods.md §7.1, §7.5–7.7), checked against values worked
out here: the views come from the *detected* box and see the context `prompt + V` (not `+ W`), the
premature logits are un-normed `lm_head(h_j)`, the deletion count boundary, and the
`dola.after_replace` option (reuse the last premature layer, as the official code does)."""

from __future__ import annotations

import pytest
import torch

import methods.halc as halc_mod
from methods.halc_dola import DolaHead
from methods.halc_fov import ViewEncoder
from tests.methods.test_halc_search import (  # noqa: F401  (`scripted` is a fixture)
    DETECTED,
    NOTHING,
    Detector,
    Scorer,
    Tagger,
    _halc,
    _ids,
    _run,
    scripted,
)
from vh_bench.decoding import attention

WORDS = ["a", "man", "sitting", "near", "hot", "dog", "on", "the", "chair", "on", "the", "chair", "</s>"]


def _views_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list, list[int]]]:
    calls: list[tuple[list, list[int]]] = []
    real = ViewEncoder.logits

    def spy(self, boxes, context):
        calls.append(([tuple(b) for b in boxes], list(context)))
        return real(self, boxes, context)

    monkeypatch.setattr(ViewEncoder, "logits", spy)
    return calls


def _unscripted_candidates(tiny_adapter, monkeypatch: pytest.MonkeyPatch, words: list[str]) -> None:
    """The `scripted` token stream and word starts ("dog" continues a word), but real candidates."""
    ids = _ids(tiny_adapter, words[:-1]) + [tiny_adapter.eos_token_id]
    it = iter(ids)
    monkeypatch.setattr(DolaHead, "token", lambda head, out: next(it))
    starts = [True] * len(tiny_adapter.tokenizer)
    starts[tiny_adapter.tokenizer.convert_tokens_to_ids("dog")] = False
    monkeypatch.setattr(halc_mod, "_word_starts", lambda tok, eos, n: starts)


@pytest.mark.parametrize("detection, box", [(DETECTED, (0.3, 0.3, 0.6, 0.7)), (NOTHING, (0.2, 0.2, 0.8, 0.8))])
def test_views_are_built_from_the_grounded_box_and_see_the_committed_context(
    tiny_adapter, inputs, monkeypatch, detection, box
) -> None:
    _unscripted_candidates(tiny_adapter, monkeypatch, WORDS)
    calls = _views_spy(monkeypatch)
    m = _halc(delete_undetected=False).with_components(
        tagger=Tagger({"dog"}), detector=Detector(detection), scorer=Scorer(prefer=["hot"])
    )
    _run(m, tiny_adapter, inputs, max_new=12)
    assert calls, "no verification reached the views"
    boxes, context = calls[0]
    # §7.5 by hand: v0 = b shrunk to 0.4 of its sides, v1 = b, v2 = b ×1.6, v3 = v2 ×1.6, clipped.
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    v0 = (x0 + 0.3 * w, y0 + 0.3 * h, x1 - 0.3 * w, y1 - 0.3 * h)
    v2 = (x0 - 0.3 * w, y0 - 0.3 * h, x1 + 0.3 * w, y1 + 0.3 * h)
    w2, h2 = 1.6 * w, 1.6 * h
    v3 = (max(0.0, v2[0] - 0.3 * w2), max(0.0, v2[1] - 0.3 * h2), min(1.0, v2[2] + 0.3 * w2), min(1.0, v2[3] + 0.3 * h2))
    for got, want in zip(boxes, [v0, box, v2, v3]):
        assert got == pytest.approx(want, abs=1e-12)
    # The pending word W = [hot, dog] is what the views replace: their logits are taken after V.
    assert context == _ids(tiny_adapter, ["a", "man", "sitting", "near"])


def test_premature_logits_are_the_lm_head_of_unnormed_hidden_states(tiny_adapter, inputs) -> None:
    with torch.inference_mode(), attention.control(tiny_adapter, None):
        out = tiny_adapter.forward(
            cache=tiny_adapter.new_cache(), input_ids=inputs.input_ids, pixel_values=inputs.pixel_values,
            output_hidden_states=True,
        )  # fmt: skip
        hs = out.hidden_states
        n = tiny_adapter.n_layers
        assert len(hs) == n + 1
        W = tiny_adapter.lm_head.weight.float()
        plain = DolaHead(tiny_adapter, "even", 0.1, False).premature_logits(hs)
        want = torch.stack([hs[j][0, -1].float() @ W.T for j in range(0, n - 1, 2)])
        # 1e-4: a matmul over 128 products of O(1) terms rounds differently per kernel (2.4e-5 seen
        # with one OpenMP thread); the final norm, a wrong layer or a missing row move logits by O(1).
        torch.testing.assert_close(plain, want, rtol=1e-4, atol=1e-4)
        normed = DolaHead(tiny_adapter, "even", 0.1, True).premature_logits(hs)
        norm = tiny_adapter.final_norm
        want_n = torch.stack([norm(hs[j][0, -1]).float() @ W.T for j in range(0, n - 1, 2)])
        torch.testing.assert_close(normed, want_n, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(plain, normed, atol=1e-2)


@pytest.mark.parametrize("threshold, deleted", [(6, True), (7, False)])
def test_deletion_needs_the_committed_length_counting_the_candidate(
    tiny_adapter, inputs, scripted, threshold, deleted  # noqa: F811
) -> None:
    # As in test_replace_then_delete_keep_the_cache_in_step: after replace(cat), V has 5 tokens when
    # the not-detected "dog" is verified; |V| + 1 = 6 ≥ threshold decides the deletion (§7.7).
    words = ["a", "man", "sitting", "near", "hot", "dog", "on", "dog", "on", "on", "the", "</s>"]
    scripted(words, [["hot", "cat", "chair", "man"], ["dog", "man", "cat", "chair"]])
    m = _halc(min_committed_before_delete=threshold).with_components(
        tagger=Tagger({"dog"}), detector=Detector(DETECTED, NOTHING), scorer=Scorer(prefer=["cat", "dog"])
    )
    ids, search = _run(m, tiny_adapter, inputs)
    assert search.stats["outcome_replace"] >= 1
    assert (search.stats["outcome_delete"] == 1) is deleted
    assert (tiny_adapter.unk_token_id in ids) is deleted


@pytest.mark.parametrize("after_replace", ["reselect", "reuse"])
def test_after_replace_reuses_or_reselects_the_premature_layer(tiny_adapter, inputs, monkeypatch, after_replace) -> None:
    calls: list[int | None] = []
    picks: list[int] = []
    real_scores = DolaHead.scores

    def spy(self, out, fixed=None):
        step = real_scores(self, out, fixed)
        calls.append(fixed)
        picks.append(step.premature_index)
        return step

    monkeypatch.setattr(DolaHead, "scores", spy)
    replaced: list[int] = []
    real_apply = halc_mod.HalcSearch._apply

    def apply(self, b, c):
        if c.outcome == "replace":
            replaced.append(len(calls))  # index of the DoLa step that follows this replacement
        return real_apply(self, b, c)

    monkeypatch.setattr(halc_mod.HalcSearch, "_apply", apply)
    m = _halc(dola={"after_replace": after_replace}).with_components(
        tagger=Tagger(), detector=Detector(DETECTED), scorer=Scorer()
    )
    _run(m, tiny_adapter, inputs, max_new=16)
    assert replaced, "the scripted scorer made no replacement"
    for k in replaced:
        if after_replace == "reuse":
            assert calls[k] == picks[k - 1] and picks[k] == picks[k - 1]  # the beam's last j*
        else:
            assert calls[k] is None
    if after_replace == "reselect":
        assert all(f is None for f in calls)
    assert set(picks) <= set(range(0, tiny_adapter.n_layers - 1, 2))


def test_after_replace_value_is_checked() -> None:
    from vh_bench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"method\.dola\.after_replace"):
        _halc(dola={"after_replace": "sometimes"}).dola.check()
