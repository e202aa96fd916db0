from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.fixtures import CHAIR_RUNS, POPE_RUNS, write_results


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return write_results(tmp_path / "results", CHAIR_RUNS + POPE_RUNS)
