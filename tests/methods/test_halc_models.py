"""HALC's auxiliary models on tiny random checkpoints built offline (methods.md §8.6).

Each model is built from a config by `vh_bench.models.tiny_aux`, saved as an ordinary checkpoint
directory and loaded back through `from_pretrained` (`load_aux`), exactly like the real weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from methods.halc import HALC
from methods.halc_grounding import GroundingDinoDetector, Owlv2Detector, normalise_boxes
from methods.halc_scorer import BlipScorer
from tests.helpers import FAST, results_override
from vh_bench.config import compose
from vh_bench.data.images import two_shapes
from vh_bench.errors import ConfigError
from vh_bench.models import llava
from vh_bench.models.auxiliary import load_aux
from vh_bench.models.tiny_aux import build_aux
from vh_bench.records import GenConfig
from vh_bench.runner import plan


def _load(kind: str):
    model_type = {"owlv2": "owlv2", "grounding_dino": "grounding-dino", "blip": "blip"}[kind]
    return load_aux(str(build_aux(kind, "tiny")), key="method.x", model_type=model_type, hub_id="hub/id")


@pytest.fixture(scope="module")
def wide_image() -> Image.Image:
    """A 2:1 image: OWLv2 pads it to a square, so its boxes need the padded-frame correction."""
    return two_shapes((320, 160), (30, 90, 160), (20, 20, 140, 150), (180, 10, 300, 120), ((230, 40, 40), (240, 210, 60)))


def test_owlv2_cached_image_side_equals_the_full_forward(wide_image: Image.Image) -> None:
    model, proc = _load("owlv2")
    session = Owlv2Detector(model, proc, box_threshold=0.0).session(wide_image)
    with torch.inference_mode():
        boxes, scores = session.detect("dog")
        ref = model(**proc(text=[["dog"]], images=wide_image, return_tensors="pt"))
    assert torch.allclose(session.pred_boxes, ref.pred_boxes, atol=1e-6)
    assert scores == pytest.approx(torch.sigmoid(ref.logits[0, :, 0]).tolist(), abs=1e-5)
    # Padded-frame correction by hand: the 320×160 image sits in the top half of a 320×320
    # square, so x ∈ [0, 1] of the square maps to x/1 and y to 2·y (clipped) of the image.
    cx, cy, w, h = ref.pred_boxes[0].unbind(-1)
    manual = torch.stack([cx - w / 2, 2 * (cy - h / 2), cx + w / 2, 2 * (cy + h / 2)], dim=-1).clamp(0, 1)
    assert len(boxes) == manual.shape[0] == (model.config.vision_config.image_size // 16) ** 2
    for got, want in zip(boxes, manual.tolist()):
        assert got == pytest.approx(want, abs=1.5e-3)  # rounded to 3 decimals
    assert session.detect("dog") is session.detect("dog")  # a word is detected once per image


def test_grounding_dino_session_equals_the_processor_path(wide_image: Image.Image) -> None:
    model, proc = _load("grounding_dino")
    assert model.config.decoder_layers >= 2 and type(proc.image_processor).__name__.endswith("Pil")
    det = GroundingDinoDetector(model, proc, box_threshold=0.3, text_threshold=0.4)
    with torch.inference_mode():
        boxes, scores = det.session(wide_image).detect("Dog")
        inputs = proc(images=wide_image, text="dog.", return_tensors="pt")
        out = model(**inputs)
        res = proc.post_process_grounded_object_detection(
            out, inputs["input_ids"], threshold=0.3, text_threshold=0.4, target_sizes=[(160, 320)]
        )[0]
    assert scores == pytest.approx(res["scores"].tolist(), abs=1e-6)
    assert boxes == normalise_boxes(res["boxes"].tolist(), 320, 160)
    assert all(0.0 <= v <= 1.0 for b in boxes for v in b)


def test_blip_scores_equal_the_retrieval_models_forward(test_image: Image.Image) -> None:
    model, proc = _load("blip")
    texts = ["a dog on a table", "a cat", "two people riding bikes next to a red car", ""]
    with torch.inference_mode():
        session = BlipScorer(model, proc, mode="blip_itm").session(test_image)
        itm = session.score(texts)
        # The image's cross-attention K/V really sit in the reused cache (a swallowed cache keyword
        # would leave it empty and every call would recompute them): one entry per image embedding.
        assert session._cross.get_seq_length() == session._embeds.shape[1] > 0
        itc = BlipScorer(model, proc, mode="blip_itc").session(test_image).score(texts)
        pv = proc(images=test_image, return_tensors="pt")["pixel_values"]
        for i, text in enumerate(texts):
            enc = proc.tokenizer([text], return_tensors="pt")
            ref = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pv)
            assert itm[i] == pytest.approx(torch.softmax(ref.itm_score, dim=-1)[0, 1].item(), abs=1e-5)
            ref = model(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pv, use_itm_head=False
            )
            assert itc[i] == pytest.approx(ref.itm_score[0, 0].item(), abs=1e-5)
    assert len(set(itm)) == len(texts)  # the scores do depend on the text


# ---- missing or wrong weights: one line, names the key and the hub id -----------------------------
def _halc(**kw) -> HALC:
    return HALC(**{"detector_checkpoint": "random:tiny", "scorer_checkpoint": "random:tiny", **kw})


@pytest.mark.parametrize(
    ("kw", "key", "hub_id"),
    [
        ({"detector_checkpoint": "/nonexistent/gdino"}, "method.detector_checkpoint", "IDEA-Research/grounding-dino-tiny"),
        (
            {"detector": "owlv2", "detector_checkpoint": "/nonexistent/owl"},
            "method.detector_checkpoint",
            "google/owlv2-base-patch16-ensemble",
        ),
        ({"scorer_checkpoint": "./nonexistent/blip"}, "method.scorer_checkpoint", "Salesforce/blip-itm-large-coco"),
    ],
)
def test_missing_weights_fail_in_check_with_one_line(kw: dict, key: str, hub_id: str) -> None:
    with pytest.raises(ConfigError) as err:
        _halc(**kw).check(GenConfig())
    msg = str(err.value)
    assert key in msg and hub_id in msg and "\n" not in msg


def test_wrong_checkpoint_type_and_offline_hub_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    blip_dir = str(build_aux("blip", "tiny"))
    with pytest.raises(ConfigError, match=r"method.detector_checkpoint.*'blip' checkpoint, not 'grounding-dino'"):
        _halc(detector_checkpoint=blip_dir).check(GenConfig())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"method.scorer_checkpoint.*not in the local Hugging Face cache"):
        _halc(scorer_checkpoint="Salesforce/blip-itm-large-coco").check(GenConfig())
    # Verification off: no auxiliary model is needed at all.
    _halc(detector_checkpoint="/nonexistent", verify=False).check(GenConfig())
    # A detector that is not needed (halc-lite) is not checked either.
    _halc(detector="none", detector_checkpoint="/nonexistent").check(GenConfig())


def test_load_time_failure_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "blip"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "blip"}')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError) as err:
        load_aux(str(broken), key="method.scorer_checkpoint", model_type="blip", hub_id="Salesforce/blip-itm-large-coco")
    msg = str(err.value)
    assert "method.scorer_checkpoint" in msg and "Salesforce/blip-itm-large-coco" in msg and "\n" not in msg


def test_runner_rejects_missing_weights_before_loading_llava(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a, **k):
        raise AssertionError("LLaVA was loaded before the HALC checkpoints were validated")

    monkeypatch.setattr(llava.LlavaAdapter, "load", classmethod(refuse))
    cfg = compose([*FAST, results_override(tmp_path), "method=halc", "method.detector_checkpoint=/no/such/dir"])
    with pytest.raises(ConfigError, match="method.detector_checkpoint"):
        plan(cfg)
    cfg = compose([*FAST, results_override(tmp_path), "method=halc_tiny", "generation=beam"])
    with pytest.raises(ConfigError, match="generation.strategy"):
        plan(cfg)
    cfg = compose([*FAST, results_override(tmp_path), "method=halc_tiny", "method.num_pairs=7"])
    with pytest.raises(ConfigError, match="method.num_pairs"):
        plan(cfg)


def test_halcs_blipmodel_from_a_captioning_checkpoint_has_random_text_side(tmp_path: Path) -> None:
    """Why the harness's scorers are labelled substitutes (methods/halc_scorer.py): HALC loads
    `BlipModel` from a captioning checkpoint. On a tiny checkpoint of the same class
    (BlipForConditionalGeneration), BlipModel's text encoder and both projections are missing from it,
    so from_pretrained initialises them at random; only the vision tower is loaded."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipModel

    cfg = BlipConfig(
        text_config=dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, encoder_hidden_size=16),
        vision_config=dict(image_size=32, patch_size=16, hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=8, image_text_hidden_size=8,
    )  # fmt: skip
    captioner = BlipForConditionalGeneration(cfg)
    captioner.save_pretrained(tmp_path)
    model, info = BlipModel.from_pretrained(tmp_path, output_loading_info=True)
    missing = set(info["missing_keys"])
    assert {"visual_projection.weight", "text_projection.weight"} <= missing
    text_params = {k for k, _ in model.named_parameters() if k.startswith("text_model.")}
    assert text_params and text_params <= missing  # every text-encoder weight is fresh
    assert not any(k.startswith("vision_model.") for k in missing)  # the vision tower did load
    torch.testing.assert_close(
        model.vision_model.embeddings.patch_embedding.weight, captioner.vision_model.embeddings.patch_embedding.weight
    )


def test_results_label_the_scorer_as_a_substitute() -> None:
    for scorer in ("blip_itm", "blip_itc"):
        label = HALC(scorer=scorer).implementation()["halc_scorer"]
        assert label.startswith(f"BLIP image-text {'matching' if scorer == 'blip_itm' else 'contrastive'}")
        assert "substitute" in label and "random" in label
