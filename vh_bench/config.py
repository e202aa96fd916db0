"""Config plumbing: resolvers, composition for tests and scripts, typed views of the groups."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from vh_bench.errors import ConfigError, is_int, is_number
from vh_bench.paths import PACKAGE_DIR, config_dir, project_root
from vh_bench.records import GenConfig


def default_root() -> str:
    """`paths.root`: the source checkout when running from one, else the working directory
    (an installed package must not write results into site-packages)."""
    root = project_root()
    if (root / "pyproject.toml").is_file() and (root / "configs").is_dir() and root != PACKAGE_DIR:
        return str(root)
    return os.getcwd()


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("vh_root"):
        OmegaConf.register_new_resolver("vh_root", default_root)


register_resolvers()


def compose(overrides: Sequence[str] = (), *, return_hydra_config: bool = False) -> DictConfig:
    """Compose `config.yaml` with overrides exactly as the CLI does (tests and scripts use this)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def gen_config(cfg: DictConfig, max_new_tokens_override: int | None = None) -> GenConfig:
    """Typed, range-checked `generation.*` (unknown keys fail: the dataclass takes no others)."""
    raw = OmegaConf.to_container(cfg.generation, resolve=True)
    assert isinstance(raw, dict)
    try:
        gen = GenConfig(**raw)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError("generation", f"unknown key ({exc})") from exc
    if max_new_tokens_override is not None and "max_new_tokens" not in _cli_overridden_keys(cfg):
        gen = GenConfig(**{**raw, "max_new_tokens": max_new_tokens_override})  # type: ignore[arg-type]
    check_gen(gen)
    return gen


def override_key(ov: str) -> str:
    """The key a Hydra override sets: `+a.b=1`, `~a.b`, `a.b=1` → `a.b`."""
    return ov.split("=", 1)[0].lstrip("+~")


# Where `record_overrides` keeps the overrides of a config composed outside @hydra.main.
OVERRIDES_KEY = "_overrides_"


def record_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Keep `overrides` on `cfg` (for a config composed by `compose`, where HydraConfig is not set),
    so that `gen_config` sees the generation.* keys given explicitly, as under @hydra.main."""
    with open_dict(cfg):
        cfg[OVERRIDES_KEY] = list(overrides)
    return cfg


def _cli_overridden_keys(cfg: DictConfig) -> set[str]:
    """generation.* keys set explicitly on the command line (a dataset default must not beat them)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task
    except Exception:  # noqa: BLE001 - not under @hydra.main (benches, tests, scripts)
        overrides = cfg.get(OVERRIDES_KEY) or ()  # recorded by `record_overrides`, else none
    keys = set()
    for ov in overrides:
        key = override_key(str(ov))
        if key.startswith("generation."):
            keys.add(key.split(".", 1)[1])
    return keys


def _check_gen_types(gen: GenConfig) -> None:
    # Types first: `2.5` tokens or `abc` would otherwise pass a range check or fail as a TypeError.
    for key in ("max_new_tokens", "num_beams", "top_k"):
        if not is_int(getattr(gen, key)):
            raise ConfigError(f"generation.{key}", f"must be an integer, got {getattr(gen, key)!r}")
    for key in ("temperature", "top_p", "length_penalty"):
        if not is_number(getattr(gen, key)):
            raise ConfigError(f"generation.{key}", f"must be a finite number, got {getattr(gen, key)!r}")
    if not isinstance(gen.early_stopping, bool):
        raise ConfigError("generation.early_stopping", f"must be true or false, got {gen.early_stopping!r}")


def check_gen(gen: GenConfig) -> None:
    _check_gen_types(gen)
    if gen.strategy not in ("greedy", "beam", "sample"):
        raise ConfigError("generation.strategy", f"{gen.strategy!r} is not greedy, beam or sample")
    if gen.max_new_tokens < 1:
        raise ConfigError("generation.max_new_tokens", f"must be >= 1, got {gen.max_new_tokens}")
    if gen.num_beams < 1:
        raise ConfigError("generation.num_beams", f"must be >= 1, got {gen.num_beams}")
    if gen.strategy != "beam" and gen.num_beams != 1:
        raise ConfigError("generation.num_beams", f"{gen.num_beams} beams need generation.strategy=beam")
    if gen.temperature <= 0:
        raise ConfigError("generation.temperature", f"must be > 0, got {gen.temperature}")
    if gen.top_k < 0:
        raise ConfigError("generation.top_k", f"must be >= 0 (0 disables), got {gen.top_k}")
    if not 0 < gen.top_p <= 1:
        raise ConfigError("generation.top_p", f"must be in (0, 1], got {gen.top_p}")


def to_plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def resolve_device(runtime: DictConfig) -> tuple[str, str]:
    import torch

    device = str(runtime.device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and "LOCAL_RANK" in os.environ:
            # torchrun: one GPU per process; each rank is a data shard (runner.shard_of).
            device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("runtime.device", f"{device!r} requested but CUDA is not available", "use runtime.device=cpu")
    dtype = str(runtime.dtype)
    if dtype == "auto":
        dtype = "float16" if device.startswith("cuda") else "float32"
    return device, dtype


def results_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.paths.results_dir)).expanduser().resolve()
