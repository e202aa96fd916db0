"""Random-weight Qwen2.5-VL checkpoints built offline (the `model=tiny_qwen2_5_vl` family builder).

The checkpoint is laid out like a hub snapshot of Qwen/Qwen2.5-VL-7B-Instruct (config.json with
`model_type: qwen2_5_vl`, safetensors, tokenizer files, `preprocessor_config.json` of the Qwen2-VL
image processor naming `Qwen2_5_VLProcessor`), so it loads through exactly the adapter's path for
real weights. What is scaled down: the vision tower (patch 14, 2×2 merge, window attention with one
full-attention block as the last of its group, like blocks 7/15/23/31 of the 7B), the Qwen2 text
model (M-RoPE sections in the 7B's 16:24:24 proportion of head_dim/2), and the vocabulary: tiny.py's
caption and COCO words behind Qwen's special tokens. Qwen's byte-level BPE has no `<unk>`; neither
has this tokenizer (a word outside the list maps to `<|endoftext|>`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from vh_bench.models.tiny import build_once, seeded_model, text_shape
from vh_bench.models.tiny_vocab import vocabulary

# Ids 0…6 here; 151643…151656 in Qwen2.5's tokenizer (the order of these names is the same).
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)
# Words of the `qwen` template (templates.py) that tiny_vocab.py's list lacks.
TEMPLATE_WORDS = ("system", "You")
PROCESSOR_CLASS = "Qwen2_5_VLProcessor"  # what a hub snapshot's processor files name


@dataclass(frozen=True)
class TinyQwenSpec:
    """Shape of a random Qwen2.5-VL. Vision defaults: 2 blocks, the second with full attention."""

    seed: int = 0
    patch_size: int = 14
    temporal_patch_size: int = 2  # a still image is two identical frames (Qwen's processor repeats it)
    merge_size: int = 2
    window_size: int = 112  # pixels: 4×4 merged units per attention window, as at 7B
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 128
    fullatt_blocks: tuple[int, ...] = field(default=(1,))
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 2  # grouped-query attention, as Qwen2.5 (28 heads, 4 KV heads at 7B)
    text_intermediate: int = 256
    mrope_section: tuple[int, ...] = field(default=(4, 6, 6))  # sums to head_dim/2 = 16
    rope_theta: float = 1000000.0
    pad_vocab_to: int = 0  # 0: the word list's size; else a larger, realistic lm_head
    initializer_range: float = 0.3  # methods.md §1.9: wide margins so greedy outputs vary
    rms_norm_eps: float = 1e-6
    weights_dtype: str = "float32"

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def build_tokenizer_object() -> Tokenizer:
    """WordLevel over tiny.py's words with Qwen's special tokens first; no BOS (Qwen adds none)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in [*vocabulary(), *TEMPLATE_WORDS]:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=ENDOFTEXT))
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    return tok


def make_tokenizer():
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer_object(),
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        extra_special_tokens={"image_token": IMAGE_PAD, "video_token": VIDEO_PAD},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer


def make_image_processor(spec: TinyQwenSpec):
    """Qwen2-VL's PIL image processor with the spec's patching; transformers' own pixel limits
    (a config pins them at load: `model.min_pixels` / `model.max_pixels`)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(
        patch_size=spec.patch_size, temporal_patch_size=spec.temporal_patch_size, merge_size=spec.merge_size
    )


class CheckpointProcessorFiles:
    """Writes the processor files of a hub snapshot: tokenizer files and `preprocessor_config.json`,
    both naming `Qwen2_5_VLProcessor` (whose video half needs torchvision, absent here)."""

    def __init__(self, tokenizer, image_processor) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        self.tokenizer._set_processor_class(PROCESSOR_CLASS)
        self.tokenizer.save_pretrained(directory)
        self.image_processor.save_pretrained(directory)
        path = Path(directory) / "preprocessor_config.json"
        cfg = json.loads(path.read_text())
        cfg["processor_class"] = PROCESSOR_CLASS
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def make_model(spec: TinyQwenSpec, tokenizer):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    head_dim = spec.text_hidden // spec.text_heads
    if sum(spec.mrope_section) * 2 != head_dim:
        raise ValueError(f"mrope_section {spec.mrope_section} must sum to head_dim/2 = {head_dim // 2}")
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(
        **text_shape(spec, len(tokenizer)),
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta, "mrope_section": list(spec.mrope_section)},
        bos_token_id=ids[ENDOFTEXT],
        eos_token_id=ids[IM_END],
        pad_token_id=ids[ENDOFTEXT],
    )
    vision = dict(
        depth=spec.vision_layers,
        hidden_size=spec.vision_hidden,
        intermediate_size=spec.vision_intermediate,
        num_heads=spec.vision_heads,
        patch_size=spec.patch_size,
        spatial_merge_size=spec.merge_size,
        temporal_patch_size=spec.temporal_patch_size,
        window_size=spec.window_size,
        out_hidden_size=spec.text_hidden,
        fullatt_block_indexes=list(spec.fullatt_blocks),
        tokens_per_second=2,  # the 7B's value (videos only)
        initializer_range=spec.initializer_range,
    )
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=False,
    )
    # Qwen2.5-VL-Instruct's generation config: <|im_end|> ends a turn, <|endoftext|> a document.
    special = ([ids[IM_END], ids[ENDOFTEXT]], ids[ENDOFTEXT], ids[ENDOFTEXT])
    return seeded_model(Qwen2_5_VLForConditionalGeneration, config, spec.seed, special_ids=special)


def build_tiny_qwen(spec: TinyQwenSpec, cache_dir: str | os.PathLike) -> Path:
    """Return a checkpoint directory for `spec`, building it (atomically) if absent."""

    def make() -> tuple[Any, Any]:
        tokenizer = make_tokenizer()
        return make_model(spec, tokenizer), CheckpointProcessorFiles(tokenizer, make_image_processor(spec))

    return build_once(Path(cache_dir) / f"tiny-qwen2_5_vl-{spec.digest()}", spec, make)


def build_from_dict(spec: dict, cache_dir: str | os.PathLike) -> Path:
    """The registry's builder (vh_bench/models/registry.py): `model.tiny` as a plain dict."""
    spec = dict(spec)
    for key in ("fullatt_blocks", "mrope_section"):
        if key in spec:
            spec[key] = tuple(int(x) for x in spec[key])
    return build_tiny_qwen(TinyQwenSpec(**spec), cache_dir)
