"""Auxiliary checkpoints that a decoding method needs besides LLaVA (HALC's detector and scorer).

Checks run before any model is loaded (`check_aux_checkpoint`, from a method's `check()`), loading
goes through `from_pretrained` (`load_aux`); both turn every failure into a one-line `ConfigError`
naming the config key and the hub id users normally download. `random:tiny` / `random:bench` name
random-weight checkpoints built offline by `vh_bench.models.tiny_aux`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vh_bench.errors import ConfigError
from vh_bench.models import tiny_aux

MODEL_CLASSES = {
    "grounding-dino": "GroundingDinoForObjectDetection",
    "owlv2": "Owlv2ForObjectDetection",
    "blip": "BlipForImageTextRetrieval",
}
KIND_OF_TYPE = {"grounding-dino": "grounding_dino", "owlv2": "owlv2", "blip": "blip"}


def looks_local(value: str) -> bool:
    p = Path(value)
    return p.is_absolute() or value.startswith((".", "~")) or p.exists()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _in_hub_cache(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # noqa: BLE001 - a malformed id is reported by from_pretrained later
        return False


def check_aux_checkpoint(value: Any, *, key: str, model_type: str, hub_id: str, alternative: str = "") -> None:
    """Fail fast (one line, names `key` and `hub_id`) when the checkpoint cannot possibly load."""
    fix = f"download {hub_id} and set {key}=<its directory>, or {key}={hub_id} with hub access"
    if alternative:
        fix += f"; {alternative}"
    if not isinstance(value, str) or not value:
        raise ConfigError(key, "is empty", fix)
    if tiny_aux.is_random(value):
        try:
            tiny_aux.random_size(value)
        except ValueError as exc:
            raise ConfigError(key, str(exc)) from exc
        return
    if looks_local(value):
        p = Path(value).expanduser()
        if not p.is_dir():
            raise ConfigError(key, f"{p} does not exist", fix)
        cfg = p / "config.json"
        if not cfg.is_file():
            raise ConfigError(key, f"{p} has no config.json", fix)
        try:
            found = json.loads(cfg.read_text()).get("model_type")
        except json.JSONDecodeError as exc:
            raise ConfigError(key, f"{cfg} is not valid JSON ({exc})") from exc
        if found != model_type:
            raise ConfigError(key, f"{p} is a {found!r} checkpoint, not {model_type!r}", fix)
        if not (any(p.glob("*.safetensors")) or any(p.glob("*.bin"))):
            raise ConfigError(key, f"{p} has no weight files (*.safetensors)", fix)
        return
    if _offline() and not _in_hub_cache(value):
        raise ConfigError(key, f"{value} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set", fix)


def load_aux(
    value: str,
    *,
    key: str,
    model_type: str,
    hub_id: str,
    device: Any = "cpu",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Any, Any]:
    """(model, processor) in fp32 eval mode on `device`; failures → one-line ConfigError."""
    import transformers

    check_aux_checkpoint(value, key=key, model_type=model_type, hub_id=hub_id)
    path = tiny_aux.resolve_checkpoint(value, KIND_OF_TYPE[model_type], cache_dir)
    cls = getattr(transformers, MODEL_CLASSES[model_type])
    try:
        processor = transformers.AutoProcessor.from_pretrained(path)
        model = cls.from_pretrained(path, dtype="float32")
    except Exception as exc:  # noqa: BLE001 - network, corrupt files, version skew: all one line for people
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            key, f"cannot load {value} ({first})", f"download {hub_id} and set {key}=<its directory>"
        ) from exc
    loaded_type = getattr(model.config, "model_type", None)
    if loaded_type != model_type:
        raise ConfigError(key, f"{value} is a {loaded_type!r} checkpoint, not {model_type!r}")
    model.to(device).eval()
    model.requires_grad_(False)
    return model, processor
