"""Random-weight LLaVA checkpoints built offline from a config (no hub access).

`build_tiny_llava` writes an ordinary Hugging Face checkpoint directory (config, safetensors,
tokenizer, processor), so the tiny and bench models go through exactly the same
`from_pretrained` path as real LLaVA-1.5 weights. The directory name carries a hash of the build
parameters: the same parameters (seed included) give the same weights and are built only once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

from vh_bench.models.tiny_vocab import vocabulary

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>")  # ids 0, 1, 2 as in LLaVA-1.5's Llama tokenizer
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class TinySpec:
    """Shape of a random LLaVA. Defaults: the test model of methods.md §8 at 336 px."""

    seed: int = 0
    image_size: int = 336
    patch_size: int = 14
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_heads: int = 2
    text_hidden: int = 128
    text_layers: int = 4
    text_heads: int = 4
    text_kv_heads: int = 4
    text_intermediate: int = 256
    pad_vocab_to: int = 0  # 0: vocabulary size of the word list; else a larger, realistic lm_head
    initializer_range: float = 0.3  # methods.md §1.9: wide margins so greedy outputs vary
    rms_norm_eps: float = 1e-6  # LlamaConfig's default; LLaVA-1.5 uses 1e-5
    weights_dtype: str = "float32"  # dtype of the saved weights (llava-hf ships float16)

    def digest(self) -> str:
        # Fields added after the first builds are left out at their defaults, so that the
        # checkpoints already built keep their directory names.
        spec = {k: v for k, v in asdict(self).items() if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]}
        blob = json.dumps(spec, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


_LATER_FIELDS = {"rms_norm_eps": 1e-6, "weights_dtype": "float32"}
WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def build_tokenizer_object(words: list[str] | None = None) -> Tokenizer:
    """A WordLevel tokenizer over `words` (default: caption words + COCO object words), LLaVA's
    special ids."""
    words = vocabulary() if words is None else words
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))
    vocab[IMAGE_TOKEN] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    # The processor adds BOS, like LLaMA's tokenizer does (methods.md §1.3).
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)]
    )
    return tok


def make_processor(spec: TinySpec, words: list[str] | None = None):
    from transformers import LlavaProcessor, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer_object(words),
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<unk>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # the CLS token the "default" strategy drops
    )


def vision_shape(spec: Any) -> dict[str, Any]:
    """A ViT's shape keywords from a spec's `image_size`, `patch_size`, `vision_*` fields (CLIP's and
    BLIP's vision configs take the same names)."""
    return dict(image_size=spec.image_size, patch_size=spec.patch_size, hidden_size=spec.vision_hidden,
                intermediate_size=spec.vision_hidden * 4, num_hidden_layers=spec.vision_layers,
                num_attention_heads=spec.vision_heads)  # fmt: skip


def text_shape(spec: Any, vocab_size: int) -> dict[str, Any]:
    """A decoder's shape keywords from a spec's `text_*` fields (Llama's and Qwen2's configs take the
    same names); the vocabulary padded to `spec.pad_vocab_to`."""
    return dict(vocab_size=max(vocab_size, spec.pad_vocab_to), hidden_size=spec.text_hidden,
                intermediate_size=spec.text_intermediate, num_hidden_layers=spec.text_layers,
                num_attention_heads=spec.text_heads, num_key_value_heads=spec.text_kv_heads,
                max_position_embeddings=4096, rms_norm_eps=spec.rms_norm_eps,
                initializer_range=spec.initializer_range)  # fmt: skip


def make_sub_configs(spec: TinySpec, vocab_size: int):
    """(CLIP vision config, Llama text config) of `spec`; shared by the LLaVA-family builders."""
    from transformers import CLIPVisionConfig, LlamaConfig

    vision = CLIPVisionConfig(**vision_shape(spec), projection_dim=spec.vision_hidden)
    text = LlamaConfig(**text_shape(spec, vocab_size), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return vision, text


def make_model(spec: TinySpec, vocab_size: int, image_token_id: int):
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    vision, text = make_sub_configs(spec, vocab_size)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=image_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        initializer_range=spec.initializer_range,
    )
    return seeded_model(LlavaForConditionalGeneration, config, spec.seed)


def seeded_model(model_class: Any, config: Any, seed: int, init: Callable[[Any], None] | None = None,
                 special_ids: tuple[Any, int, int] = (2, 1, 0)) -> Any:  # fmt: skip
    """`model_class(config)` drawn from `seed`, then `init(model)` (weights transformers leaves at a
    constant), with generation ids (eos, bos, pad); in eval mode. Seeded locally: building a model
    must not disturb anyone's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
        if init is not None:
            with torch.no_grad():
                init(model)
    gen = model.generation_config
    gen.eos_token_id, gen.bos_token_id, gen.pad_token_id = special_ids
    return model.eval()


def build_once(target: Path, spec: Any, make: Callable[[], tuple[Any, Any]]) -> Path:
    """`target` for the spec dataclass `spec`, built from `make() -> (model, processor)` unless it exists: weights drawn in
    float32 (the same values as a float32 build), cast to `spec.weights_dtype`, saved atomically."""
    if (target / "config.json").is_file():
        return target
    if spec.weights_dtype not in WEIGHTS_DTYPES:
        raise ValueError(f"weights_dtype {spec.weights_dtype!r} is not one of {sorted(WEIGHTS_DTYPES)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("building random-weight %s %s in %s", target.name, spec, target)
    model, processor = make()
    if spec.weights_dtype != "float32":
        model = model.to(WEIGHTS_DTYPES[spec.weights_dtype])
    save_checkpoint(target, model, processor, asdict(spec))
    return target


def build_tiny_llava(spec: TinySpec, cache_dir: str | os.PathLike) -> Path:
    """Return a checkpoint directory for `spec`, building it (atomically) if absent."""

    def make() -> tuple[Any, Any]:
        processor = make_processor(spec)
        tok = processor.tokenizer
        return make_model(spec, vocab_size=len(tok), image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN)), processor

    return build_once(Path(cache_dir) / f"tiny-llava-{spec.digest()}", spec, make)


def save_checkpoint(target: Path, model, processor, spec: dict) -> None:
    """Save `model`, `processor` and `vh_bench_spec.json` as the checkpoint directory `target`.

    Written to a temporary sibling and renamed, so a crash never leaves half a checkpoint; if the
    rename fails because a concurrent builder already made `target`, theirs is kept."""
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "vh_bench_spec.json").write_text(json.dumps(spec, indent=1))
        os.replace(tmp, target)
    except OSError:
        if not (target / "config.json").is_file():  # else a concurrent builder won the race
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def build_from_dict(spec: dict, cache_dir: str | os.PathLike) -> Path:
    """The registry's builder (vh_bench/models/registry.py): `model.tiny` as a plain dict."""
    return build_tiny_llava(TinySpec(**spec), cache_dir)
