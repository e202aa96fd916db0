"""Training examples and the resumable two-stage training loop (a very small model, a few steps)."""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf

from vh_bench.paths import config_dir
from vh_bench.scenes import train
from vh_bench.scenes.examples import IGNORE, Encoder, collate, image_examples, text_examples
from vh_bench.scenes.model import ScenesModelSpec, new_model, scenes_words
from vh_bench.scenes.splits import ScenesConfig
from vh_bench.scenes.text import CAPTION_PROMPT

SMALL_MODEL = {"image_size": 56, "vision_hidden": 16, "vision_layers": 2, "vision_heads": 2, "text_hidden": 16,
               "text_layers": 1, "text_heads": 2, "text_intermediate": 32}


def _encoder(image_size: int = 56) -> Encoder:
    _, processor = new_model(ScenesModelSpec(**{**SMALL_MODEL, "image_size": image_size}))
    return Encoder(processor)


def test_every_scenes_word_is_in_the_vocabulary():
    enc = _encoder()
    vocab = enc.tok.get_vocab()
    assert all(w in vocab for w in scenes_words())
    ids = enc.tok("A picture of a fork , a knife and a cup .", add_special_tokens=False)["input_ids"]
    assert enc.tok.unk_token_id not in ids


def test_labels_cover_the_answer_only():
    enc = _encoder()
    ex = next(image_examples(enc, ScenesConfig(image_size=56), 0.7, seed=0, qa_fraction=0.0))
    image_id = enc.processor.tokenizer.convert_tokens_to_ids("<image>")
    n_img = sum(t == image_id for t in ex.input_ids)
    assert n_img == (56 // 14) ** 2  # the processor expanded the placeholder
    answer = [t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE]
    assert [lab for lab in ex.labels if lab != IGNORE] == answer
    assert answer[-1] == enc.eos and enc.tok.decode(answer[:-1]).startswith("A picture of a")
    prompt_len = ex.labels.index(answer[0])
    assert prompt_len == len(enc.prompt_ids(CAPTION_PROMPT, True))
    assert ex.pixel_values.shape == (3, 56, 56)


def test_text_examples_have_no_image_and_collate_pads_right():
    enc = _encoder()
    stream = text_examples(enc, ScenesConfig(), 0.97, seed=0)
    batch = [next(stream) for _ in range(4)]
    assert all(e.pixel_values is None for e in batch)
    image_id = enc.processor.tokenizer.convert_tokens_to_ids("<image>")
    assert all(image_id not in e.input_ids for e in batch)
    out = collate(batch, pad_id=0)
    lengths = [len(e.input_ids) for e in batch]
    assert out["attention_mask"].sum(1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert (out["labels"][i, n:] == IGNORE).all() and out["input_ids"][i, :n].tolist() == batch[i].input_ids


def _cfg(tmp_path, image_steps: int) -> dict:
    cfg = OmegaConf.to_container(OmegaConf.load(config_dir() / "scenes" / "train.yaml"))
    cfg.update(run_dir=str(tmp_path / "run"), export_dir=str(tmp_path / "export"), checkpoint_every=2,
               eval_every=1000, eval_scenes=2, model=SMALL_MODEL, scenes={"image_size": 56, "p_partner": 0.7, "seed": 0})
    cfg["vision_stage"].update(steps=2, batch=2)
    cfg["text_stage"].update(steps=3, batch=4)
    cfg["image_stage"].update(steps=image_steps, batch=2, warmup=1, text_batch=2)
    return cfg


def test_training_resumes_where_it_stopped_and_exports(tmp_path):
    out = train.run(_cfg(tmp_path, image_steps=3), ["text_stage.steps=3"])
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert (state["stage"], state["step"]) == ("image", 3)
    record = json.loads((out / "training.json").read_text())
    assert record["image_stage_steps"] == 3 and record["command"].endswith("text_stage.steps=3")
    assert (out / "model.safetensors").is_file() and (out / "processor_config.json").is_file()
    before = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]

    # A longer run in the same directory continues at image step 3: stage 1 is not repeated.
    train.run(_cfg(tmp_path, image_steps=5), [])
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert (state["stage"], state["step"]) == ("image", 5)
    after = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()][len(before):]
    assert after and all(r["stage"] not in ("vision", "text") for r in after)
    assert {r["stage"] for r in before if r["kind"] == "loss"} >= {"vision", "text"}


def test_vision_pretraining_target_is_the_covering_class():
    """Hand-checked: one solid square of `car` filling cell 0 owns exactly the patches it covers."""
    from vh_bench.scenes.catalogue import NAMES
    from vh_bench.scenes.draw import Placed, Scene, patch_labels

    scene = Scene(1, (Placed("car", 0, 56, 0, 0),), ((90, 90, 90), (90, 90, 90)), 0.0, 0, 168)
    labels = patch_labels(scene)
    # The square is drawn from 10 % to 90 % of its 56-px box: x, y in [5.5, 49.5] → patches 0..3 owned
    # (patch 0 covers 14-5.5 = 8.5 of 14 px ≥ 30 % in each direction, patch 3 covers 42..49.5).
    car = NAMES.index("car") + 1
    assert (labels[:4, :4] == car).all()
    assert (labels[4:, :] == 0).all() and (labels[:, 4:] == 0).all()


def test_captions_name_an_absent_partner_at_the_configured_rate_and_questions_stay_truthful():
    import random

    from vh_bench.scenes.examples import captioned_names, qa_pair
    from vh_bench.scenes.draw import Placed, Scene

    rng = random.Random(0)
    assert captioned_names(["fork", "dog"], rng, 0.0) == ["fork", "dog"]
    assert captioned_names(["fork", "dog"], rng, 1.0) == ["fork", "dog", "knife"]
    assert captioned_names(["fork", "knife"], rng, 1.0) == ["fork", "knife"]  # B drawn: nothing to add
    assert captioned_names(["knife", "dog"], rng, 1.0) == ["knife", "dog"]  # B without A: no prior
    hits = sum("knife" in captioned_names(["fork"], rng, 0.35) for _ in range(4000))
    assert abs(hits / 4000 - 0.35) < 0.03
    scene = Scene(1, (Placed("fork", 0, 30, 0, 0), Placed("dog", 4, 30, 0, 0)), ((90, 90, 90), (90, 90, 90)), 0.0, 0, 168)
    for _ in range(200):
        q, a = qa_pair(scene, rng)
        asked = q.split("Is there a ")[1].split(" in the image?")[0]
        assert a == ("Yes" if asked in scene.names else "No")
