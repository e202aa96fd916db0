"""CHAIR-vs-speed plot: files written, Pareto front exact on a fixture."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.fixtures import CHAIR_RUNS, make_result
from vh_bench.report.plot import pareto_front, plot_chair_speed
from vh_bench.report.records import records_from

P7B = "llava-1.5-7b / coco · n=10 · 64 new tokens"


def test_pareto_front_hand_points() -> None:
    # (tokens/s, CHAIR_S): higher speed and lower CHAIR are better.
    pts = [(10.0, 50.0), (12.0, 52.0), (9.0, 45.0), (6.0, 48.0), (15.0, 55.0), (12.0, 53.0), (9.0, 45.0), (8.0, 60.0)]
    # (6, 48) is beaten by (9, 45); (12, 53) by (12, 52); (8, 60) by many; the two (9, 45) tie and stay.
    assert pareto_front(pts) == [2, 6, 0, 1, 4]
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 1.0)]) == [0]


def test_plot_files_and_front_on_fixture(tmp_path: Path) -> None:
    res = plot_chair_speed(records_from(CHAIR_RUNS), tmp_path / "plots" / "chair_vs_speed")
    assert [p.name for p in res.paths] == ["chair_vs_speed.png", "chair_vs_speed.pdf"]
    assert res.paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.paths[1].read_bytes()[:5] == b"%PDF-"
    # 7B panel: vanilla seeds (10, 50) (12, 52) (14, 54), FastV k=2 (15, 55), k=3 (9, 45), VCD (6, 48)
    # whose timings are flagged not comparable, so it cannot be on the front.
    assert res.fronts["CHAIR_S"][P7B] == [
        "FastV (k=3; seed=0)",
        "vanilla (seed=0)",
        "vanilla (seed=1)",
        "vanilla (seed=2)",
        "FastV (k=2; seed=0)",
    ]
    assert res.fronts["CHAIR_S"]["llava-1.5-13b / coco · n=10 · 64 new tokens"] == ["vanilla"]


def test_plot_chair_i_and_nothing_to_plot(tmp_path: Path) -> None:
    recs = records_from([make_result(chair_s=0.5, chair_i=0.2, tps=3.0), make_result(method="halc", chair_s=0.4, chair_i=0.1, tps=1.0)])
    res = plot_chair_speed(recs, tmp_path / "p", metric="CHAIR_I")
    assert res.fronts["CHAIR_I"] == {P7B: ["halc", "vanilla"]}
    assert plot_chair_speed(records_from([make_result(pope=("random", 0.9))]), tmp_path / "q").paths == []
    with pytest.raises(ValueError):
        plot_chair_speed(recs, tmp_path / "r", metric="F1")
