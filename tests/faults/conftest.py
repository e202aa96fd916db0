"""Fixtures of the fault suite: what must not happen (a model load before validation) and what a
user error must look like (one line naming the key)."""

from __future__ import annotations

import contextlib
import copy
from functools import lru_cache
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from tests.helpers import FAST, results_override
from vh_bench.config import compose, record_overrides
from vh_bench.models import llava


@pytest.fixture
def no_model_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad-input errors must come before any model is loaded (seconds, not a GPU job's start-up)."""

    def refuse(*a, **k):
        raise AssertionError("a model was loaded before the config was validated")

    monkeypatch.setattr(llava.LlavaAdapter, "load", classmethod(refuse))


def fast_cfg(results: Path, *extra: str):
    """The tiny model's config with results under `results` (overrides recorded as the CLI does)."""
    overrides = [*FAST, results_override(results), *extra]
    return record_overrides(compose(overrides), overrides)


GROUPS = {"model", "method", "dataset", "generation", "runtime", "paths", "experiment"}


@lru_cache(maxsize=None)
def _base(fast: tuple[str, ...], groups: tuple[str, ...]):
    return compose([*fast, *groups])


# FAST without its tiny-model key, for configs of real checkpoints (model=llava-1.5-7b).
FAST_ANY_MODEL = tuple(o for o in FAST if not o.startswith("model."))


def quick_cfg(results: Path, *extra: str, fast: tuple[str, ...] = FAST):
    """`fast_cfg` for the many bad-value cases: Hydra composes each group selection once (a compose
    costs seconds on a busy machine) and each `key=value` is then parsed by Hydra's own override
    parser, so `2.5`, `abc`, `nan`, `true` and `null` arrive typed exactly as on the command line."""
    groups = tuple(o for o in extra if "=" in o and o.split("=", 1)[0] in GROUPS)
    values = [results_override(results), *(o for o in extra if o not in groups)]
    cfg = copy.deepcopy(_base(fast, groups))
    for ov in OverridesParser.create().parse_overrides(values):
        with open_dict(cfg) if ov.is_add() else contextlib.nullcontext():
            OmegaConf.update(cfg, ov.key_or_group, ov.value(), merge=False, force_add=ov.is_add())
    return record_overrides(cfg, [*fast, *groups, *values])


def assert_one_line(exc: BaseException, key: str) -> str:
    """A user error is one line that starts by naming its config key."""
    msg = str(exc)
    assert msg.startswith(f"config `{key}`: "), msg
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg
