"""The Hydra callback builds the sweep's tables and plot at the end of a multirun."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.mark.slow
def test_callback_fires_after_a_small_multirun(tmp_path: Path) -> None:
    proc = run_cli(
        [
            "-m",
            "runtime.limit=1",
            "runtime.warmup_samples=0",  # the one sample is timed, so the plot has points
            "generation.max_new_tokens=4",
            "generation.strategy=greedy,beam",
            "model.tiny.image_size=224",
            "runtime.progress=false",
            f"paths.results_dir={tmp_path}",
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list((tmp_path / "multirun").glob("*/*"))
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0]
    expected = [f"{t}.{e}" for t in ("table1_chair", "runs") for e in ("md", "csv", "tex")] + ["chair_vs_speed.png", "chair_vs_speed.pdf"]
    for name in expected:
        assert (sweep / name).is_file() and (sweep / name).stat().st_size > 0, name
    # Demo captions have no POPE runs: no Table 2.
    assert not (sweep / "table2_pope.md").exists()
    rows = list(csv.DictReader(io.StringIO((sweep / "table1_chair.csv").read_text())))
    assert [(r["Method"], r["Decoding"]) for r in rows] == [("vanilla", "beam(1)"), ("vanilla", "greedy")]
    assert all(r["tiny/CHAIR_S"] != "" and float(r["tiny/decode_tps"]) > 0 for r in rows)
    # With the baseline in the sweep, each row is its own decoding's baseline.
    assert [float(r["tiny/decode_tps_ratio"]) for r in rows] == [1.0, 1.0]
    runs = list(csv.DictReader(io.StringIO((sweep / "runs.csv").read_text())))
    assert sorted(r["strategy"] for r in runs) == ["beam", "greedy"]
    assert "Table 1" in proc.stdout
