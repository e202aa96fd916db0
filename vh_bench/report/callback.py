"""Hydra callback: after every multirun, the sweep's tables and CHAIR-vs-speed plot.

Configured in configs/config.yaml under `hydra.callbacks.report`. Each job writes `run_dir.txt`
(vh_bench.__main__) into its Hydra output directory; the callback reads those to find the sweep's
results.json files, so runs shared with other sweeps (same content, same directory) are included.
Files go to the sweep directory (and `out_dir` when set): see `report.build`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class SweepReport(Callback):
    def __init__(
        self,
        out_dir: str | None = None,
        formats: tuple[str, ...] = ("md", "csv", "latex"),
        baseline: str | None = "vanilla",
        plot_metric: str = "CHAIR_S",
        plot: bool = True,
        allow_mixed: bool = False,
    ) -> None:
        self.allow_mixed = allow_mixed
        self.out_dir = out_dir
        self.formats = tuple(formats)
        self.baseline = baseline
        self.plot_metric = plot_metric
        self.plot = plot

    @staticmethod
    def sweep_results(sweep_dir: Path) -> list[Path]:
        run_dirs = sorted({Path(p.read_text().strip()) for p in sweep_dir.rglob("run_dir.txt")})
        return [d / "results.json" for d in run_dirs if (d / "results.json").is_file()]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        paths = self.sweep_results(sweep_dir)
        if not paths:
            log.warning("sweep %s produced no results.json", sweep_dir)
            return
        try:
            self._write(paths, sweep_dir)
        except Exception:  # noqa: BLE001 - the runs are safe on disk; a report bug must not hide that
            log.exception("sweep report failed; rerun `python -m vh_bench.report %s --out-dir %s`", sweep_dir, sweep_dir)

    def _write(self, paths: list[Path], sweep_dir: Path) -> None:
        from vh_bench.report.build import build_report, write_report
        from vh_bench.report.records import load_results

        from vh_bench.report.paper import MixedRunsError

        try:
            report = build_report(load_results(paths), baseline=self.baseline, allow_mixed=self.allow_mixed)
        except MixedRunsError as exc:
            # The runs are on disk; say why there is no table and how to get one.
            log.error("sweep report not written: %s (rerun `python -m vh_bench.report %s --allow-mixed`, or set "
                      "hydra.callbacks.report.allow_mixed=true)", exc, sweep_dir)  # fmt: skip
            return
        targets = [sweep_dir] + ([Path(self.out_dir)] if self.out_dir else [])
        for target in targets:
            write_report(report, target, formats=self.formats, plot_metric=self.plot_metric, plot=self.plot)
        print("\n\n".join(report.render(w, "md") for w in report.paper_tables()))
        log.info("sweep report (%d runs) written to %s", len(paths), ", ".join(str(t) for t in targets))
