"""Random-weight InstructBLIP checkpoints built offline (the `model=tiny_instructblip` family builder).

InstructBLIP's three parts at toy widths: a BLIP ViT (224 px, patch 14 → 256 patches + CLS, like
the real model's input), a BERT-style Q-Former that cross-attends to them with 32 learned queries
and also reads the instruction (its own WordLevel tokenizer, BERT's specials), and the Llama text
model, tokenizer and COCO-word vocabulary of `tiny.py`'s LLaVA. The 32 query outputs, projected,
are the language model's visual tokens, whatever the image size: the same count as
Salesforce/instructblip-vicuna-7b. Saved with `save_checkpoint`, so it loads through the same
`from_pretrained` path as real weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from vh_bench.models.tiny import (IMAGE_TOKEN, TinySpec, build_once, build_tokenizer_object, make_sub_configs,
                                  seeded_model, vision_shape)  # fmt: skip
from vh_bench.models.tiny_vocab import vocabulary

# bert-base-uncased's special tokens (the real Q-Former tokenizer), at the front of the vocabulary.
QFORMER_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


@dataclass(frozen=True)
class TinyBlipSpec(TinySpec):
    image_size: int = 224  # InstructBLIP's ViT input; 16×16 patches at patch 14
    num_query_tokens: int = 32  # as the real model: the visual-token count
    qformer_hidden: int = 64
    qformer_layers: int = 2
    qformer_heads: int = 2
    cross_attention_frequency: int = 2  # as the real Q-Former: cross-attention in every other layer


def build_qformer_tokenizer_object(words: list[str] | None = None) -> Tokenizer:
    """WordLevel over the (lower-cased) tiny vocabulary with BERT's specials and `[CLS] … [SEP]`."""
    vocab = {tok: i for i, tok in enumerate(QFORMER_SPECIALS)}
    for w in vocabulary() if words is None else words:
        vocab.setdefault(w.lower(), len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()  # bert-base-uncased
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return tok


def make_blip_processor(spec: TinyBlipSpec):
    from transformers import InstructBlipProcessor, PreTrainedTokenizerFast
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    # tiny LLaVA's vocabulary and ids (BOS added, `<image>` a special token), but without LLaVA's
    # `image_token` attribute: InstructBlipProcessor then registers `<image>` itself, as it does for
    # the real Vicuna tokenizer (with the attribute as a plain string it fails at `.content`).
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer_object(),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    qformer_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_qformer_tokenizer_object(),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    image_processor = BlipImageProcessorPil(size={"height": spec.image_size, "width": spec.image_size})
    return InstructBlipProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=spec.num_query_tokens,
    )


def make_blip_model(spec: TinyBlipSpec, vocab_size: int, qformer_vocab_size: int, image_token_id: int):
    from transformers import (
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )

    _, text = make_sub_configs(spec, vocab_size)  # tiny LLaVA's Llama
    vision = InstructBlipVisionConfig(
        **vision_shape(spec),
        initializer_range=spec.initializer_range,  # the default 1e-10 would make a blind tower
    )
    qformer = InstructBlipQFormerConfig(
        vocab_size=qformer_vocab_size,
        hidden_size=spec.qformer_hidden,
        num_hidden_layers=spec.qformer_layers,
        num_attention_heads=spec.qformer_heads,
        intermediate_size=spec.qformer_hidden * 4,
        cross_attention_frequency=spec.cross_attention_frequency,
        encoder_hidden_size=spec.vision_hidden,
        initializer_range=spec.initializer_range,
        pad_token_id=0,
    )
    config = InstructBlipConfig(
        vision_config=vision,
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=spec.num_query_tokens,
        image_token_index=image_token_id,
        initializer_range=spec.initializer_range,
    )
    # transformers initialises the queries to zeros: 32 identical queries would give 32 identical
    # visual tokens, and every selection among them would be a tie.
    return seeded_model(InstructBlipForConditionalGeneration, config, spec.seed,
                        init=lambda m: m.query_tokens.normal_(0.0, spec.initializer_range))  # fmt: skip


def build_tiny_instructblip(spec: TinyBlipSpec, cache_dir: str | os.PathLike) -> Path:
    """Return a checkpoint directory for `spec`, building it (atomically) if absent."""

    def make() -> tuple[Any, Any]:
        processor = make_blip_processor(spec)
        tok = processor.tokenizer
        model = make_blip_model(
            spec,
            vocab_size=len(tok),
            qformer_vocab_size=len(processor.qformer_tokenizer),
            image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        )
        return model, processor

    return build_once(Path(cache_dir) / f"tiny-instructblip-{spec.digest()}", spec, make)


def build_from_dict(spec: dict, cache_dir: str | os.PathLike) -> Path:
    """The registry's builder (vh_bench/models/registry.py): `model.tiny` as a plain dict."""
    return build_tiny_instructblip(TinyBlipSpec(**spec), cache_dir)
