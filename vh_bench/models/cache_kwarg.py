"""The keyword under which a transformers forward takes the KV cache, read from its signature.

transformers 5.24 renamed `past_key_values=` to `cache=` (the old name warns and is announced for
removal in 5.40); 5.17–5.23 know only `past_key_values=`. Every forward also takes `**kwargs`, so a
name the installed version does not know is swallowed without an error and the model builds its own
cache: the harness's cache would stay empty and every decode step would run without its context.
Asking the signature instead of the version number keeps the harness on the supported name of
whichever version is installed, and fails loudly when neither name is there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any

NAMES = ("cache", "past_key_values")  # preferred first: the new name where both are accepted


@lru_cache(maxsize=None)
def cache_keyword(fn: Callable[..., Any]) -> str:
    """The cache keyword of `fn` (a function or an unbound `forward`, not a bound method)."""
    params = inspect.signature(fn).parameters
    for name in NAMES:
        if name in params:
            return name
    raise RuntimeError(
        f"{getattr(fn, '__qualname__', fn)} takes neither of {NAMES}: this transformers version is not "
        "supported (see pyproject.toml for the tested range)"
    )


def cache_kwargs(module: Any, cache: Any) -> dict[str, Any]:
    """`{keyword: cache}` for calling `module` (a `torch.nn.Module` whose `forward` takes a cache)."""
    return {cache_keyword(type(module).forward): cache}
