"""`python -m vh_bench.scenes train|check|methods|curve [key=value ...]`: the scenes testbed's commands."""

from __future__ import annotations

import logging
import sys


def _compose(name: str, overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from vh_bench.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir() / "scenes"), version_base=None):
        cfg = compose(config_name=name, overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not argv or argv[0] not in ("train", "check", "methods", "curve"):
        print("usage: python -m vh_bench.scenes train|check|methods|curve [key=value ...]", file=sys.stderr)
        return 2
    cmd, overrides = argv[0], argv[1:]
    if cmd == "train":
        from vh_bench.scenes import train

        train.run(_compose("train", overrides), overrides)
        return 0
    if cmd == "curve":
        from vh_bench.scenes import curve

        curve.main(overrides)
        return 0
    if cmd == "methods":
        from vh_bench.scenes import methods_table

        return methods_table.main(overrides)
    from vh_bench.scenes import check

    return check.main(overrides)


if __name__ == "__main__":
    sys.exit(main())
