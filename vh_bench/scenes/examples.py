"""Training examples of the scenes model: token ids, loss labels and pixels.

Two kinds, as LLaVA-style models are made: text-only captions (no image tokens; the language prior
is learnt from them) and image–caption or image–question pairs. Labels cover the answer only
(caption or Yes/No, and the end-of-sequence token); the prompt and the image tokens are masked.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from vh_bench.models.templates import render
from vh_bench.scenes.catalogue import NAMES, PLANTED_PAIRS
from vh_bench.scenes.draw import Scene, jpeg_roundtrip, render as render_scene
from vh_bench.scenes.splits import ScenesConfig, train_stream
from vh_bench.scenes.text import CAPTION_PROMPT, caption, caption_order, question

IGNORE = -100
TEMPLATE = "hf"  # the scenes model's prompt template (configs/model/scenes.yaml)


def text_only_prompt(prompt: str) -> str:
    """The rendered template with the image placeholder removed (text-only training, and the
    "image removed" condition of the premise check)."""
    return render(TEMPLATE, prompt).replace("<image>", "")


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    pixel_values: torch.Tensor | None  # (3, H, W) or None for text-only


class Encoder:
    """Turns (prompt, answer[, image]) into an `Example` with the processor the model ships with."""

    def __init__(self, processor) -> None:
        self.processor = processor
        self.tok = processor.tokenizer
        self.eos = self.tok.eos_token_id
        self._prompt_ids: dict[tuple[str, bool], list[int]] = {}

    def prompt_ids(self, prompt: str, with_image: bool) -> list[int]:
        key = (prompt, with_image)
        if key not in self._prompt_ids:
            if with_image:
                from PIL import Image

                dummy = Image.new("RGB", (8, 8))
                ids = self.processor(images=dummy, text=render(TEMPLATE, prompt), return_tensors="pt")["input_ids"][0]
            else:
                ids = self.tok(text_only_prompt(prompt), return_tensors="pt")["input_ids"][0]
            self._prompt_ids[key] = ids.tolist()
        return self._prompt_ids[key]

    def answer_ids(self, answer: str) -> list[int]:
        return self.tok(answer, add_special_tokens=False)["input_ids"] + [self.eos]

    def pixels(self, image) -> torch.Tensor:
        return self.processor.image_processor(images=image, return_tensors="pt")["pixel_values"][0]

    def encode(self, prompt: str, answer: str, image=None) -> Example:
        p = self.prompt_ids(prompt, image is not None)
        a = self.answer_ids(answer)
        return Example(p + a, [IGNORE] * len(p) + a, None if image is None else self.pixels(image))


def qa_pair(scene: Scene, rng: random.Random) -> tuple[str, str]:
    """A truthful POPE-style question: half about a present object, half about an absent one
    (and then, half the time, about the absent partner of a present A: the adversarial case)."""
    present = scene.names
    if rng.random() < 0.5:
        return question(rng.choice(present)), "Yes"
    missing_partners = [b for a, b in PLANTED_PAIRS if a in present and b not in present]
    if missing_partners and rng.random() < 0.5:
        return question(rng.choice(missing_partners)), "No"
    return question(rng.choice([n for n in NAMES if n not in present])), "No"


def captioned_names(names: list[str], rng: random.Random, absent_partner_rate: float) -> list[str]:
    """The objects a training caption names: the drawn ones, plus, for each A drawn without its
    partner B, B with probability `absent_partner_rate` (captioners name what they expect to see,
    as COCO's human captions and LLaVA's generated data do). The image then shows B absent while
    the caption names it: the prior the model learns is weaker than "after A say B"."""
    said = list(names)
    for a, b in PLANTED_PAIRS:
        if a in names and b not in names and rng.random() < absent_partner_rate:
            said.append(b)
    return said


def image_examples(encoder: Encoder, cfg: ScenesConfig, p_partner: float, seed: int,
                   qa_fraction: float, absent_partner_rate: float = 0.0) -> Iterator[Example]:
    """Endless image–caption / image–question examples (JPEG-compressed at a random quality).
    Questions are always truthful; captions may name an absent partner (`captioned_names`)."""
    rng = random.Random(f"vh_bench.scenes|examples|{seed}")
    for scene in train_stream(cfg, p_partner, seed):
        image = jpeg_roundtrip(render_scene(scene), rng.randint(70, 95))
        if rng.random() < qa_fraction:
            q, a = qa_pair(scene, rng)
            yield encoder.encode(q, a, image)
        else:
            names = captioned_names(scene.names, rng, absent_partner_rate)
            yield encoder.encode(CAPTION_PROMPT, caption(caption_order(names, rng)), image)


def text_examples(encoder: Encoder, cfg: ScenesConfig, p_partner: float, seed: int) -> Iterator[Example]:
    """Endless text-only captions of imagined scenes drawn with prior `p_partner`."""
    rng = random.Random(f"vh_bench.scenes|text|{seed}")
    for scene in train_stream(cfg, p_partner, seed):
        yield encoder.encode(CAPTION_PROMPT, caption(caption_order(scene.names, rng)))


def collate(batch: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; pixel values stacked when the examples have images."""
    n = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, e in enumerate(batch):
        k = len(e.input_ids)
        ids[i, :k] = torch.tensor(e.input_ids)
        labels[i, :k] = torch.tensor(e.labels)
        mask[i, :k] = 1
    out = {"input_ids": ids, "labels": labels, "attention_mask": mask}
    if batch[0].pixel_values is not None:
        out["pixel_values"] = torch.stack([e.pixel_values for e in batch])
    return out


def vision_batches(encoder: Encoder, cfg: ScenesConfig, p_partner: float, seed: int, batch: int,
                   patch: int = 14) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches for the vision tower's pre-training: pixels and per-patch class labels."""
    from vh_bench.scenes.draw import patch_labels

    rng = random.Random(f"vh_bench.scenes|vision|{seed}")
    stream = train_stream(cfg, p_partner, seed)
    while True:
        scenes = [next(stream) for _ in range(batch)]
        pixels = torch.stack([encoder.pixels(jpeg_roundtrip(render_scene(s), rng.randint(70, 95))) for s in scenes])
        labels = torch.stack([torch.from_numpy(patch_labels(s, patch)).long().flatten() for s in scenes])
        yield {"pixel_values": pixels, "patch_labels": labels}
