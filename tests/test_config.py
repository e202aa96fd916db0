"""Every config file composes; the config directory is found; unknown keys fail loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from vh_bench import paths
from vh_bench.config import compose
from vh_bench.errors import ConfigError
from vh_bench.runner import build_method

CONFIGS = paths.config_dir()
GROUPS = ("model", "method", "dataset", "generation", "runtime", "paths", "experiment")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in GROUPS for o in _options(g)]
    + [f"hydra/launcher={o}" for o in _options("hydra/launcher")],
)
def test_every_config_file_composes(override: str) -> None:
    cfg = compose([override], return_hydra_config=override.startswith("hydra/"))
    # Resolving catches broken interpolations, not just YAML syntax.
    container = OmegaConf.to_container(cfg, resolve=not override.startswith("hydra/"))
    assert set(GROUPS) - {"experiment"} <= set(container)


def test_required_groups_and_defaults() -> None:
    cfg = compose([])
    assert cfg.method._target_ == "methods.vanilla.Vanilla"
    assert cfg.generation.strategy == "greedy"
    assert cfg.runtime.seed == 0
    assert cfg.runtime.limit is None
    assert Path(cfg.paths.results_dir).name == "results"


def test_shared_dir_comes_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VH_BENCH_SHARED", str(tmp_path))
    assert compose([]).paths.shared == str(tmp_path)


def test_config_dir_search_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert paths.config_dir() == (paths.project_root() / "configs").resolve()
    (tmp_path / "config.yaml").write_text("defaults: []\n")
    monkeypatch.setenv("VH_BENCH_CONFIG_DIR", str(tmp_path))
    assert paths.config_dir() == tmp_path.resolve()
    monkeypatch.setenv("VH_BENCH_CONFIG_DIR", str(tmp_path / "nowhere"))
    assert paths.config_dir() == (paths.project_root() / "configs").resolve()


def test_packaged_config_copy_is_declared() -> None:
    # An installed wheel finds configs as vh_bench/configs: pyproject must map and ship them.
    text = (paths.project_root() / "pyproject.toml").read_text()
    assert '"vh_bench.configs" = "configs"' in text
    assert '"vh_bench.configs" = ["**/*.yaml"]' in text


def test_unknown_key_fails_at_composition() -> None:
    with pytest.raises(ConfigCompositionException, match="method.no_such_key"):
        compose(["method.no_such_key=1"])


def test_unknown_method_key_added_with_plus_fails_at_build() -> None:
    cfg = compose(["+method.no_such_key=1"])
    with pytest.raises(ConfigError, match=r"config `method`.*no_such_key"):
        build_method(cfg)


def test_unknown_method_name_fails() -> None:
    with pytest.raises(ConfigCompositionException, match="method/nope"):
        compose(["method=nope"])


def test_every_method_config_registers_a_method() -> None:
    for name in _options("method"):
        cfg = compose([f"method={name}"])
        method = build_method(cfg)
        assert method.fingerprint()["method"] == method.name
