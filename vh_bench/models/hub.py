"""A hub id for `model.path` checked before loading: in the local cache, or answered in seconds.

Without this, an id that is not cached on a machine without network ends, after minutes of
transformers' retries, in a traceback; a typo'd id on a machine with network in a 404 traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from vh_bench.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
HUB_TIMEOUT_S = 10.0


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) as the libraries read it."""
    from huggingface_hub import constants

    env = any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return env or bool(constants.HF_HUB_OFFLINE)


def check_hub_id(repo_id: str, *, key: str = "model.path", cache_dir: str | Path | None = None) -> None:
    """Raise one ConfigError line naming `key` unless `repo_id` can be loaded: it is cached, or
    (online) the hub knows it. Gated or private models pass when the token can see them."""
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ConfigError(key, f"{repo_id!r} is neither a local directory nor a hub id ({str(exc).splitlines()[0]})") from None
    if isinstance(try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir), str):
        return
    fix = "download it first (hf download ID) or set it to a local checkpoint directory"
    if hub_offline():
        raise ConfigError(key, f"hub id {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set", fix)
    try:
        HfApi().model_info(repo_id, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise ConfigError(key, f"no model {repo_id!r} on the Hugging Face hub (or it is private: log in)", fix) from None
    except Exception as exc:  # noqa: BLE001 - any network failure: say so now instead of retrying for minutes
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(key, f"hub id {repo_id!r} is not cached and the hub cannot be reached ({first})", fix) from None
