"""Older llava-hf snapshots (no processor_config.json, or one without a key): one line naming
`model.path` and the file to add, before any weights load (issue 19, item 4)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import tiny_checkpoint
from vh_bench.errors import ConfigError
from vh_bench.models.llava import LlavaAdapter


def old_snapshot(tmp_path: Path, processor_keys: dict | None) -> Path:
    """The tiny checkpoint laid out like an older snapshot: the image processor alone in
    preprocessor_config.json; processor_config.json absent (None) or holding only `processor_keys`."""
    src = Path(tiny_checkpoint())
    dst = tmp_path / "llava-old"
    dst.mkdir()
    for f in src.iterdir():
        if f.name != "processor_config.json":
            (dst / f.name).symlink_to(f)
    proc = json.loads((src / "processor_config.json").read_text())
    (dst / "preprocessor_config.json").write_text(json.dumps(proc["image_processor"]))
    if processor_keys is not None:
        (dst / "processor_config.json").write_text(json.dumps(processor_keys))
    return dst


@pytest.mark.parametrize(
    ("keys", "named"),
    [
        (None, "patch_size"),
        ({"patch_size": 14, "vision_feature_select_strategy": "default", "processor_class": "LlavaProcessor"},
         "num_additional_image_tokens"),
    ],
)  # fmt: skip
def test_incomplete_processor_config_is_one_line_naming_model_path(tmp_path, keys, named):
    path = old_snapshot(tmp_path, keys)
    with pytest.raises(ConfigError) as info:
        LlavaAdapter.load(str(path))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("config `model.path`") and named in msg
    assert "processor_config.json" in msg


def test_adding_the_suggested_file_makes_it_load(tmp_path, test_image, caption_prompt):
    path = old_snapshot(tmp_path, None)
    with pytest.raises(ConfigError) as info:
        LlavaAdapter.load(str(path))
    suggested = json.loads(re.search(r"holding (\{.*?\})", str(info.value)).group(1))
    (path / "processor_config.json").write_text(json.dumps(suggested))
    adapter = LlavaAdapter.load(str(path))
    assert adapter.prepare(test_image, caption_prompt).n_image_tokens == (224 // 14) ** 2
