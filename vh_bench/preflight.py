"""Config checks that need neither torch nor transformers, run before either is imported.

Importing torch and transformers takes 5 s on an idle 2-core machine and 15-20 s on a busy one, so
`python -m vh_bench` checks what it can first: generation.*, runtime.*, the dataset's inputs, and
whether a hub id in model.path can be loaded at all when the hub is off (HF_HUB_OFFLINE=1). A bad
value then costs about a second, and no run directory is made for it. The method's
hyperparameters are checked by the method's constructor, which needs torch (`runner.plan`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from vh_bench.config import gen_config
from vh_bench.errors import ConfigError

DTYPE_NAMES = ("float32", "float16", "bfloat16")  # the keys of models.llava.DTYPES (a test holds them equal)


def check_runtime(runtime: DictConfig) -> None:
    from vh_bench import checks

    checks.check_runtime(runtime)  # types and ranges first: `abc` for a count is one line, not a ValueError
    if runtime.attn_backend not in ("sdpa", "eager"):
        raise ConfigError("runtime.attn_backend", f"{runtime.attn_backend!r} is not sdpa or eager")
    if runtime.on_oom not in ("skip", "raise"):
        raise ConfigError("runtime.on_oom", f"{runtime.on_oom!r} is not skip or raise")
    if str(runtime.dtype) not in ("auto", *DTYPE_NAMES):
        raise ConfigError("runtime.dtype", f"{runtime.dtype!r} is not one of {sorted(DTYPE_NAMES)} or auto")
    shard_of(runtime)


def shard_of(runtime: DictConfig) -> tuple[int, int]:
    """Shard from config, else from torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    sh = runtime.shard
    try:
        index = sh.index if sh.index is not None else int(os.environ.get("RANK", 0))
        count = sh.count if sh.count is not None else int(os.environ.get("WORLD_SIZE", 1))
    except ValueError:
        raise ConfigError("runtime.shard", f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE="
                          f"{os.environ.get('WORLD_SIZE')!r} are not integers", "set runtime.shard.*") from None
    if count < 1 or not 0 <= index < count:
        raise ConfigError("runtime.shard", f"index {index} / count {count} out of range", "0 <= index < count")
    return int(index), int(count)


def looks_local(path_or_id: str) -> bool:
    """A filesystem path rather than a hub id (the same rule as models.llava.check_checkpoint)."""
    p = Path(path_or_id)
    return p.is_absolute() or path_or_id.startswith((".", "~")) or p.exists()


def check_model(model: DictConfig) -> None:
    from vh_bench.models.registry import family, load_options

    fam = family(model.get("family"))  # an unknown family: one line before torch loads
    fam.check_options(load_options(fam, model))  # e.g. Qwen2.5-VL's pixel limits
    if model.tiny is not None:
        return
    if not model.path:
        raise ConfigError("model.path", "is empty", "a hub id such as llava-hf/llava-1.5-7b-hf or a local directory")
    path = str(model.path)
    if not looks_local(path):
        from vh_bench.models.hub import check_hub_id  # torch-free: huggingface_hub only

        check_hub_id(path)
    elif not Path(path).expanduser().is_dir():
        # The common case of models.llava.check_checkpoint, which also checks the directory's
        # contents once transformers is imported.
        raise ConfigError("model.path", f"{Path(path).expanduser()} does not exist",
                          "point it at a LLaVA-1.5 checkpoint directory or a hub id")  # fmt: skip


class _Attrs:
    """A plain config mapping read by attribute, as the methods' checks read their dataclasses."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getattr__(self, key: str) -> Any:
        try:
            value = self._data[key]
        except KeyError:
            raise AttributeError(key) from None
        return _Attrs(value) if isinstance(value, dict) else value


def check_method(method: DictConfig) -> None:
    """`method.*` values through the method's own check (methods/settings.py), before torch loads.

    A key the config leaves to the dataclass default is skipped here (the defaults are valid, and
    the full check runs again when the method is built).
    """
    from methods.settings import CHECKS

    check = CHECKS.get(str(method.get("_target_")))
    if check is None:
        return
    try:
        check(_Attrs(OmegaConf.to_container(method, resolve=True)))  # type: ignore[arg-type]
    except AttributeError:
        return  # a key only the dataclass knows


def build_dataset(cfg: DictConfig) -> Any:
    """The dataset built from `cfg.dataset` (torch-free); a failure is one ConfigError line."""
    from hydra.utils import instantiate

    try:
        return instantiate(cfg.dataset, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - Hydra wraps the constructor's TypeErrors
        cause = exc.__cause__ or exc  # the same line as runner._instantiate gives
        raise ConfigError("dataset", f"cannot build {cfg.dataset.get('_target_')}: {cause}".splitlines()[0]) from exc


def preflight(cfg: DictConfig) -> None:
    """Every check that needs no torch: raise ConfigError (one line, the key) on the first problem."""
    gen_config(cfg)
    check_runtime(cfg.runtime)
    check_model(cfg.model)
    check_method(cfg.method)
    dataset = build_dataset(cfg)
    if getattr(dataset, "max_new_tokens", None) is not None and int(dataset.max_new_tokens) < 1:
        raise ConfigError("dataset.max_new_tokens", f"must be >= 1, got {dataset.max_new_tokens}")
    dataset.check()
