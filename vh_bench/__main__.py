"""`python -m vh_bench [-m] key=value ...`: the Hydra entry point (configs/config.yaml)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

import vh_bench.config  # noqa: F401 - importing it registers ${vh_root:}, which Hydra resolves
from vh_bench.errors import ConfigError, RunError, ScoringError
from vh_bench.paths import config_dir

log = logging.getLogger("vh_bench")


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from vh_bench.preflight import preflight

    try:
        preflight(cfg)  # a bad value fails here in about a second, before torch is imported
        from vh_bench.runner import run

        results = run(cfg)
    except (ConfigError, RunError, ScoringError) as exc:
        # One line for people; no traceback for a bad value or a bad input file.
        print(f"vh_bench: error: {exc}", file=sys.stderr)
        sys.exit(2)
    from vh_bench.report.table import format_table, results_frame

    # Tell the sweep callback where this job's results went.
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "run_dir.txt").write_text(results["run_dir"] + "\n")
    row = results_frame([results])
    # One run: its hyperparameters are in results.json; the printed line keeps to the metrics.
    print(format_table(row[[c for c in row.columns if not c.startswith("method.")]], "md"))
    chair = results.get("metrics", {}).get("chair") or {}
    return chair.get("CHAIRs")


if __name__ == "__main__":
    main()
