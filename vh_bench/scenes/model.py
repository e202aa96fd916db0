"""The untrained scenes LLaVA: the tiny builder's architecture at trainable settings, and a
tokenizer that holds every word of the scenes captions, questions, answers and prompt templates."""

from __future__ import annotations

from dataclasses import dataclass

from vh_bench.models.tiny import IMAGE_TOKEN, TinySpec, make_model, make_processor
from vh_bench.models.tiny_vocab import vocabulary
from vh_bench.scenes.catalogue import NAMES
from vh_bench.scenes.text import ANSWERS, GRAMMAR_WORDS


def scenes_words() -> list[str]:
    """The tiny model's word list (every template and POPE word) plus the scenes' own words."""
    words = vocabulary()
    seen = set(words)
    for w in (*GRAMMAR_WORDS, *ANSWERS, *NAMES):
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


@dataclass(frozen=True)
class ScenesModelSpec:
    """Architecture of the scenes model (a `TinySpec` with a small init for training)."""

    image_size: int = 168  # 12×12 = 144 image tokens (see the README's scenes section for why not 576)
    vision_hidden: int = 96
    vision_layers: int = 4  # vision_feature_layer = -2: the last layer is not used
    vision_heads: int = 4
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_intermediate: int = 384
    seed: int = 0

    def tiny_spec(self) -> TinySpec:
        return TinySpec(
            seed=self.seed,
            image_size=self.image_size,
            patch_size=14,
            vision_hidden=self.vision_hidden,
            vision_layers=self.vision_layers,
            vision_heads=self.vision_heads,
            text_hidden=self.text_hidden,
            text_layers=self.text_layers,
            text_heads=self.text_heads,
            text_kv_heads=self.text_heads,
            text_intermediate=self.text_intermediate,
            initializer_range=0.02,
        )


def new_model(spec: ScenesModelSpec):
    """(model, processor) with fresh weights, in training mode."""
    tiny = spec.tiny_spec()
    processor = make_processor(tiny, scenes_words())
    tok = processor.tokenizer
    model = make_model(tiny, vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN))
    return model.train(), processor
