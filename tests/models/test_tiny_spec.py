"""The random-model specs: `model=llava-1.5-7b-shape` composes to LLaVA-1.5-7B's widths, and the
fields added to TinySpec leave the names of checkpoints built before them unchanged (issue 19)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict

from vh_bench.config import compose, to_plain
from vh_bench.models.tiny import TinySpec


def test_7b_shape_spec_has_the_real_widths_and_takes_the_layer_override():
    spec = TinySpec(**to_plain(compose(["model=llava-1.5-7b-shape"]).model.tiny))
    assert (spec.text_hidden, spec.text_heads, spec.text_kv_heads, spec.text_intermediate) == (4096, 32, 32, 11008)
    assert (spec.vision_hidden, spec.vision_layers, spec.vision_heads, spec.patch_size) == (1024, 24, 16, 14)
    assert (spec.image_size // spec.patch_size) ** 2 == 576
    assert (spec.pad_vocab_to, spec.initializer_range, spec.rms_norm_eps) == (32064, 0.02, 1e-5)
    assert spec.text_layers == 2 and spec.weights_dtype == "float16"
    full = TinySpec(**to_plain(compose(["model=llava-1.5-7b-shape", "model.tiny.text_layers=32"]).model.tiny))
    assert full.text_layers == 32 and full.digest() != spec.digest()


def test_later_fields_at_their_defaults_keep_old_checkpoint_names():
    old_fields = {k: v for k, v in asdict(TinySpec(image_size=224)).items() if k not in ("rms_norm_eps", "weights_dtype")}
    old_digest = hashlib.sha256(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()[:12]
    assert TinySpec(image_size=224).digest() == old_digest
    assert TinySpec(image_size=224, weights_dtype="float16").digest() != old_digest
