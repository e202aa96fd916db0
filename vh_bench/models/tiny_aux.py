"""Random-weight auxiliary checkpoints for HALC (detectors and the BLIP scorer), built offline.

Like `vh_bench.models.tiny`, every builder writes an ordinary Hugging Face checkpoint directory
(config, safetensors, tokenizer, image processor) so that loading goes through exactly the same
`from_pretrained` path as the real `IDEA-Research/grounding-dino-tiny`,
`google/owlv2-base-patch16-ensemble` and `Salesforce/blip-itm-large-coco` weights.

Two sizes per model kind:
- `tiny`: the test models of methods.md §8.6 (1-layer towers at 64 px; Grounding DINO with a small
  Swin backbone at 224 px and two decoder layers). Built in about a second each.
- `bench`: the shapes of the real checkpoints, random weights, for speed benchmarks on the
  realistic-shape random LLaVA (`model=bench`). Only ratios carry over.

Tokenizers are built from the tiny LLaVA's caption/COCO word list (no hub access): a WordPiece
vocabulary for BERT-style text towers (BLIP, Grounding DINO) and a small byte-level BPE trained on
the same words for OWLv2's CLIP tokenizer. A config value `random:tiny` / `random:bench` for
`method.detector_checkpoint` or `method.scorer_checkpoint` resolves here (`resolve_checkpoint`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from vh_bench.models.tiny import save_checkpoint
from vh_bench.models.tiny_vocab import vocabulary

log = logging.getLogger(__name__)

RANDOM_PREFIX = "random:"
KINDS = ("owlv2", "grounding_dino", "blip")
SIZES = ("tiny", "bench")
BUILD_VERSION = 1  # bump when a builder's output changes

# Model shapes. `bench` mirrors the hub checkpoints' configs (hidden sizes, depths, input sizes).
SHAPES: dict[tuple[str, str], dict[str, Any]] = {
    ("owlv2", "tiny"): dict(
        image_size=64, patch_size=16, v_hidden=32, v_layers=1, v_heads=2, t_hidden=32, t_layers=1,
        t_heads=2, projection_dim=32, text_vocab=0,
    ),
    ("owlv2", "bench"): dict(  # google/owlv2-base-patch16-ensemble
        image_size=960, patch_size=16, v_hidden=768, v_layers=12, v_heads=12, t_hidden=512, t_layers=12,
        t_heads=8, projection_dim=512, text_vocab=49408,
    ),
    ("blip", "tiny"): dict(
        image_size=64, patch_size=16, v_hidden=32, v_layers=1, v_heads=2, t_hidden=32, t_layers=1,
        t_heads=2, itm_hidden=32, text_vocab=0,
    ),
    ("blip", "bench"): dict(  # Salesforce/blip-itm-large-coco (ViT-L/16 at 384 px, BERT-base text)
        image_size=384, patch_size=16, v_hidden=1024, v_layers=24, v_heads=16, t_hidden=768, t_layers=12,
        t_heads=12, itm_hidden=256, text_vocab=30524,
    ),
    ("grounding_dino", "tiny"): dict(
        image_size=224, swin_patch=8, swin_embed=16, swin_depths=(1, 1, 1, 1), swin_heads=(1, 1, 2, 2), t_hidden=32,
        t_layers=1, t_heads=2, d_model=32, enc_layers=1, dec_layers=2, heads=2, ffn=64, queries=30,
        max_text_len=32, text_vocab=0,
    ),
    ("grounding_dino", "bench"): dict(  # IDEA-Research/grounding-dino-tiny (Swin-T, BERT-base)
        image_size=800, swin_patch=4, swin_embed=96, swin_depths=(2, 2, 6, 2), swin_heads=(3, 6, 12, 24), t_hidden=768,
        t_layers=12, t_heads=12, d_model=256, enc_layers=6, dec_layers=6, heads=8, ffn=2048, queries=900,
        max_text_len=256, text_vocab=30522,
    ),
}


def is_random(checkpoint: str | None) -> bool:
    return isinstance(checkpoint, str) and checkpoint.startswith(RANDOM_PREFIX)


def random_size(checkpoint: str) -> str:
    """`random:tiny` → `tiny`; raises ValueError for an unknown size."""
    size = checkpoint[len(RANDOM_PREFIX):]
    if size not in SIZES:
        raise ValueError(f"{checkpoint!r}: the random size must be one of {', '.join(SIZES)}")
    return size


def _words() -> list[str]:
    seen: dict[str, None] = {}
    for w in vocabulary():
        seen.setdefault(w.lower(), None)
    return list(seen)


# ---- tokenizers ------------------------------------------------------------------------------
def bert_tokenizer():
    """WordPiece over the caption/COCO words plus single characters (so any word is encodable)."""
    from transformers import BertTokenizer

    vocab: dict[str, int] = {}
    for tok in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"):
        vocab[tok] = len(vocab)
    chars = sorted({c for w in _words() for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789.,'[]()-"))
    for w in _words() + chars + [f"##{c}" for c in chars]:
        vocab.setdefault(w, len(vocab))
    return BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=512)


def clip_tokenizer():
    """CLIP's byte-level BPE (`</w>` word ends), merges trained on the word list; 16-token queries."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=4096,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    # Every word twice so each survives the trainer's frequency ordering deterministically.
    bpe.train_from_iterator(_words() * 2, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = {}
    for piece, _ in sorted(state["vocab"].items(), key=lambda kv: kv[1]):
        if piece not in specials:
            vocab[piece] = len(vocab)
    # CLIP marks the end of a word on its last byte-level symbol: make sure every `c</w>` exists.
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(c + "</w>", len(vocab))
    # Specials last, as in CLIP: OWLv2 treats a query whose first id is 0 as padding.
    for piece in specials:
        vocab[piece] = len(vocab)
    merges = [tuple(m) if isinstance(m, (list, tuple)) else tuple(m.split(" ")) for m in state["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)


# ---- models ----------------------------------------------------------------------------------
def _owlv2(shape: dict[str, Any]):
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2Processor
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil

    tok = clip_tokenizer()
    vocab = max(len(tok), shape["text_vocab"])
    config = Owlv2Config(
        text_config=dict(
            vocab_size=vocab, hidden_size=shape["t_hidden"], intermediate_size=4 * shape["t_hidden"],
            num_hidden_layers=shape["t_layers"], num_attention_heads=shape["t_heads"], max_position_embeddings=16,
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        ),
        vision_config=dict(
            image_size=shape["image_size"], patch_size=shape["patch_size"], hidden_size=shape["v_hidden"],
            intermediate_size=4 * shape["v_hidden"], num_hidden_layers=shape["v_layers"],
            num_attention_heads=shape["v_heads"],
        ),
        projection_dim=shape["projection_dim"],
    )
    model = Owlv2ForObjectDetection(config)
    size = shape["image_size"]
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessorPil(size={"height": size, "width": size}), tokenizer=tok
    )
    return model, processor


def _blip(shape: dict[str, Any]):
    from transformers import BlipConfig, BlipForImageTextRetrieval, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    tok = bert_tokenizer()
    vocab = max(len(tok), shape["text_vocab"])
    config = BlipConfig(
        text_config=dict(
            vocab_size=vocab, hidden_size=shape["t_hidden"], intermediate_size=4 * shape["t_hidden"],
            num_hidden_layers=shape["t_layers"], num_attention_heads=shape["t_heads"],
            encoder_hidden_size=shape["v_hidden"], pad_token_id=tok.pad_token_id,
            bos_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
        ),
        vision_config=dict(
            image_size=shape["image_size"], patch_size=shape["patch_size"], hidden_size=shape["v_hidden"],
            intermediate_size=4 * shape["v_hidden"], num_hidden_layers=shape["v_layers"],
            num_attention_heads=shape["v_heads"],
        ),
        image_text_hidden_size=shape["itm_hidden"],
        projection_dim=shape["itm_hidden"],
    )
    model = BlipForImageTextRetrieval(config)
    size = shape["image_size"]
    processor = BlipProcessor(image_processor=BlipImageProcessorPil(size={"height": size, "width": size}), tokenizer=tok)
    return model, processor


def _grounding_dino(shape: dict[str, Any]):
    from transformers import BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoProcessor, SwinConfig
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import GroundingDinoImageProcessorPil

    tok = bert_tokenizer()
    vocab = max(len(tok), shape["text_vocab"])
    depths = list(shape["swin_depths"])
    backbone = SwinConfig(
        image_size=224, patch_size=shape["swin_patch"], embed_dim=shape["swin_embed"], depths=depths, num_heads=list(shape["swin_heads"]),
        window_size=7, out_features=["stage2", "stage3", "stage4"],
    )
    text = BertConfig(
        vocab_size=vocab, hidden_size=shape["t_hidden"], intermediate_size=4 * shape["t_hidden"],
        num_hidden_layers=shape["t_layers"], num_attention_heads=shape["t_heads"], pad_token_id=tok.pad_token_id,
    )
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=shape["d_model"],
        encoder_layers=shape["enc_layers"], decoder_layers=shape["dec_layers"],
        encoder_attention_heads=shape["heads"], decoder_attention_heads=shape["heads"],
        encoder_ffn_dim=shape["ffn"], decoder_ffn_dim=shape["ffn"], num_queries=shape["queries"],
        max_text_len=shape["max_text_len"],
    )
    model = GroundingDinoForObjectDetection(config)
    size = shape["image_size"]
    longest = size if size < 800 else 1333
    image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": size, "longest_edge": longest})
    return model, GroundingDinoProcessor(image_processor=image_processor, tokenizer=tok)


BUILDERS = {"owlv2": _owlv2, "blip": _blip, "grounding_dino": _grounding_dino}


def checkpoint_dir(kind: str, size: str, cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    blob = json.dumps({"v": BUILD_VERSION, "kind": kind, "shape": SHAPES[(kind, size)], "seed": seed}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    return Path(cache_dir) / f"random-{kind.replace('_', '-')}-{size}-{digest}"


def build_aux(kind: str, size: str = "tiny", cache_dir: str | os.PathLike | None = None, *, seed: int = 0) -> Path:
    """Return the checkpoint directory of a random `kind` model of `size`, building it (atomically) once."""
    if kind not in KINDS:
        raise ValueError(f"unknown auxiliary model kind {kind!r}; one of {KINDS}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; one of {SIZES}")
    if cache_dir is None:
        from vh_bench.paths import cache_dir as default_cache

        cache_dir = default_cache() / "models"
    target = checkpoint_dir(kind, size, cache_dir, seed)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building random-weight %s (%s) in %s", kind, size, target)
    with torch.random.fork_rng(devices=[]):  # never disturb anyone's global RNG
        torch.manual_seed(seed)
        model, processor = BUILDERS[kind](SHAPES[(kind, size)])
    model.eval()
    save_checkpoint(target, model, processor, {"kind": kind, "size": size, "seed": seed})
    return target


def resolve_checkpoint(checkpoint: str, kind: str, cache_dir: str | os.PathLike | None = None) -> str:
    """`random:<size>` → the built random checkpoint of `kind`; anything else is returned unchanged."""
    if not is_random(checkpoint):
        return checkpoint
    return str(build_aux(kind, random_size(checkpoint), cache_dir))
