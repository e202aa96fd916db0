"""Hydra callback: after every multirun, one table of the sweep's runs (and optional copies)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepReport(Callback):
    def __init__(self, out_dir: str | None = None, formats: tuple[str, ...] = ("md", "csv", "latex")) -> None:
        self.out_dir = out_dir
        self.formats = tuple(formats)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from vh_bench.report.table import format_table, load_results, results_frame
        from vh_bench.store import atomic_write_text

        sweep_dir = Path(str(config.hydra.sweep.dir))
        run_dirs = sorted({Path(p.read_text().strip()) for p in sweep_dir.rglob("run_dir.txt")})
        paths = [d / "results.json" for d in run_dirs if (d / "results.json").is_file()]
        if not paths:
            log.warning("sweep %s produced no results.json", sweep_dir)
            return
        df = results_frame(load_results(paths))
        targets = [sweep_dir] + ([Path(self.out_dir)] if self.out_dir else [])
        for target in targets:
            for fmt in self.formats:
                ext = {"md": "md", "csv": "csv", "latex": "tex"}[fmt]
                atomic_write_text(target / f"table.{ext}", format_table(df, fmt) + "\n")
        print(format_table(df, "md"))
        log.info("sweep table written to %s", ", ".join(str(t) for t in targets))
