"""Tables that say what they hold: intervals, the mixed-run refusal, limited runs, paired tests with
the baseline, POPE warnings, and a plot whose labels do not overlap."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.report.fixtures import CHAIR_RUNS, make_result, write_results
from vh_bench.report import plot as plot_module
from vh_bench.report.__main__ import main as report_main
from vh_bench.report.build import build_report, write_report
from vh_bench.report.paper import MixedRunsError, chair_table, pope_table
from vh_bench.report.records import records_from

GREEDY = ("vanilla", "greedy", "")


def _units(hallucinated: list[int], prefix: str = "coco") -> dict:
    n = len(hallucinated)
    return {"unit": "caption", "ids": [f"{prefix}:{i}" for i in range(n)], "columns": {
        "captions": [1] * n, "hallucinated": hallucinated, "hallucinated_mentions": hallucinated,
        "mentions": [1] * n, "covered": [0] * n, "gt": [1] * n}}  # fmt: skip


def test_single_run_cells_show_their_interval() -> None:
    run = make_result(chair_s=0.185, chair_i=0.06, tps=10.0, chair_ci={"CHAIRs": (0.163, 0.208), "CHAIRi": (0.05, 0.07)})
    t = chair_table(records_from([run]))
    md = t.render("md")
    assert "| vanilla | greedy |  | 10 | 64 | 60.0 | 6.0 [5.0, 7.0] | 18.5 [16.3, 20.8] | 10.00 |" in md
    assert "95% percentile bootstrap interval over images" in md
    row = next(csv.DictReader(io.StringIO(t.render("csv"))))
    assert float(row["llava-1.5-7b/CHAIR_S_low"]) == pytest.approx(16.3) and float(row["llava-1.5-7b/CHAIR_S_high"]) == pytest.approx(20.8)
    assert "18.5 [16.3, 20.8]" in t.render("latex")


def test_a_limited_run_beside_a_complete_one_is_refused_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    full = make_result(chair_s=0.50, chair_i=0.10, tps=10.0, n_samples=12, sample_set="all12")
    limited = make_result(chair_s=1.00, chair_i=0.90, tps=11.0, n_samples=2, limit=2, sample_set="first2")
    fastv = make_result(method="fastv", chair_s=0.40, chair_i=0.10, tps=12.0, n_samples=12, sample_set="all12")
    with pytest.raises(MixedRunsError, match=r"--allow-mixed") as err:
        chair_table(records_from([full, limited, fastv]))
    assert "12 samples, 64 tok" in str(err.value) and "2 samples (limit=2), 64 tok" in str(err.value)
    t = chair_table(records_from([full, limited, fastv]), allow_mixed=True)
    limited_row = ("vanilla", "greedy", "limit=2")
    assert limited_row in t.rows and GREEDY in t.rows  # the limited run is labelled, never merged
    assert t.cell(limited_row, "llava-1.5-7b", "CHAIR_S").flag == "‡"
    assert t.cell(GREEDY, "llava-1.5-7b", "CHAIR_S").flag == ""
    md = t.render("md")
    assert "| vanilla | greedy | limit=2 | 2‡ | 64‡ |" in md and "100.0‡" in md
    assert any("limit=N" in n for n in t.notes) and any(n.startswith("‡") for n in t.notes)
    # The CLI: one line and exit 2 without the flag, the marked table with it.
    d = write_results(tmp_path / "r", [full, limited, fastv])
    assert report_main([str(d)]) == 2
    err_text = capsys.readouterr().err.strip()
    assert len(err_text.splitlines()) == 1 and "--allow-mixed" in err_text
    assert report_main([str(d), "--allow-mixed"]) == 0
    assert "limit=2" in capsys.readouterr().out


def test_different_lengths_are_refused_in_one_column() -> None:
    a = make_result(chair_s=0.5, chair_i=0.1, tps=10.0, max_new=64)
    b = make_result(method="fastv", chair_s=0.5, chair_i=0.1, tps=10.0, max_new=512)
    with pytest.raises(MixedRunsError, match="512 tok"):
        chair_table(records_from([a, b]))
    with pytest.raises(MixedRunsError):
        pope_table(records_from([make_result(pope=("random", 0.9)), make_result(method="vcd", pope=("random", 0.8), n_samples=5)]))


def test_paired_comparison_with_the_baseline(tmp_path: Path) -> None:
    base_h = [1] * 30 + [0] * 10  # CHAIR_S 75 %
    better = [0] * 30 + [0] * 10  # 0 %: far outside the noise
    same = list(base_h)
    runs = [
        make_result(chair_s=0.75, chair_i=0.75, tps=10.0, n_samples=40, chair_units=_units(base_h)),
        make_result(method="fastv", chair_s=0.0, chair_i=0.0, tps=12.0, n_samples=40, chair_units=_units(better)),
        make_result(method="vcd", chair_s=0.75, chair_i=0.75, tps=5.0, n_samples=40, chair_units=_units(same)),
    ]
    report = build_report(runs, baseline="vanilla")
    t = report.chair
    assert t.cell(("fastv", "greedy", ""), "llava-1.5-7b", "CHAIR_S").flag == "*"
    assert t.cell(("vcd", "greedy", ""), "llava-1.5-7b", "CHAIR_S").flag == ""
    by = {(c["method"], c["metric"]): c for c in t.comparisons}
    f = by[("fastv", "CHAIR_S")]
    assert f["difference"] == pytest.approx(-75.0) and f["excludes_zero"] and f["p_value"] < 0.01
    assert f["baseline"] == "vanilla greedy" and f["baseline_value"] == pytest.approx(75.0) and f["n_units"] == 40
    v = by[("vcd", "CHAIR_S")]
    assert v["difference"] == 0.0 and v["p_value"] == 1.0 and not v["excludes_zero"]
    assert "permutation" in v["p_value_method"]
    assert list(report.paired["method"]) == ["fastv", "vcd", "fastv", "vcd"]
    names = {p.name for p in write_report(report, tmp_path / "out", plot=False)}
    assert {"paired.md", "paired.csv", "paired.tex"} <= names
    assert "| llava-1.5-7b | CHAIR_S | fastv | greedy |  | vanilla greedy | 40 | 0.00 | 75.00 | -75.00 |" in (tmp_path / "out" / "paired.md").read_text()


def test_runs_over_other_images_are_not_paired() -> None:
    runs = [
        make_result(chair_s=0.5, chair_i=0.5, tps=10.0, n_samples=4, chair_units=_units([1, 0, 1, 0], "coco")),
        make_result(method="fastv", chair_s=0.5, chair_i=0.5, tps=10.0, n_samples=4, chair_units=_units([1, 0, 1, 0], "other")),
    ]
    t = chair_table(records_from(runs), baseline="vanilla")
    assert t.comparisons == []
    assert any("not compared with vanilla: different sample sets" in n for n in t.notes)


def test_pope_warnings_reach_the_table() -> None:
    runs = [
        make_result(pope=("random", 0.667), pope_extra={"n_unparseable": 10, "mostly_unparseable": True, "n": 12}),
        make_result(method="vcd", pope=("random", 0.667), pope_extra={"n_parser_disagree": 3}),
        make_result(method="fastv", pope=("random", 0.8), pope_extra={"scored_on": "answered_subset", "n_scored": 9, "n_questions": 12}),
    ]
    t = pope_table(records_from(runs))
    g = "llava-1.5-7b POPE coco"
    md = t.render("md")
    assert t.cell(GREEDY, g, "F1.random").unreliable and "(66.7)§" in md
    assert "66.7¶" in md and "80.0°" in md
    assert any("not a score" in n for n in t.notes)
    assert any("3 answer(s)" in n for n in t.notes) and any("9/12 scored" in n for n in t.notes)
    assert r"$^\S$" in t.render("latex")


def _many_close_runs() -> list[dict]:
    runs = list(CHAIR_RUNS)
    runs += [make_result(method="fastv", label="FastV", hyper={"k": 4 + k, "ratio": 0.5}, chair_s=0.50 + 0.001 * k,
                         chair_i=0.15, tps=11.0 + 0.01 * k, chair_ci={"CHAIRs": (0.45, 0.55)}) for k in range(12)]  # fmt: skip
    return runs


def test_plot_labels_never_overlap_and_axes_stay_in_range(tmp_path: Path) -> None:
    runs = _many_close_runs() + [make_result(model="tiny", dataset="demo", chair_s=1.0, chair_i=0.98, tps=30.0,
                                             chair_ci={"CHAIRs": (1.0, 1.0), "CHAIRi": (0.95, 1.0)})]  # fmt: skip
    res = plot_module.plot_chair_speed(records_from(runs), tmp_path / "p")
    assert res.n_labels == 2 * (len(runs))  # one label per run in each of the two panels
    assert res.label_overlaps == 0
    assert all(0.0 <= lo < hi <= 100.0 for lo, hi in res.y_limits.values())
    assert "tiny / demo · n=10 · 64 new tokens" in res.titles
    assert set(res.fronts) == {"CHAIR_S", "CHAIR_I"}


def test_the_overlap_check_catches_labels_left_at_their_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plot_module, "spread_labels", lambda ys, gap, lo=0.0, hi=1.0: list(ys))
    res = plot_module.plot_chair_speed(records_from(_many_close_runs()), tmp_path / "p")
    assert res.label_overlaps > 0


def test_spread_labels_keeps_order_gap_and_bounds() -> None:
    pos = plot_module.spread_labels([0.5, 0.5, 0.51, 0.99, 1.0], gap=0.1)
    order = sorted(range(5), key=lambda i: ([0.5, 0.5, 0.51, 0.99, 1.0][i], i))
    placed = [pos[i] for i in order]
    assert all(b - a >= 0.1 - 1e-12 for a, b in zip(placed, placed[1:]))
    assert placed[-1] <= 1.0 and placed[0] >= 0.0
    assert plot_module.spread_labels([0.2], gap=0.1) == [0.2]
    squeezed = plot_module.spread_labels([0.5] * 21, gap=0.1)  # 21 labels cannot be 0.1 apart in [0, 1]
    assert min(squeezed) >= 0.0 and max(squeezed) <= 1.0 + 1e-12


def test_runs_over_other_samples_get_their_own_plot_row(tmp_path: Path) -> None:
    runs = [make_result(chair_s=0.5, chair_i=0.1, tps=10.0), make_result(chair_s=0.9, chair_i=0.5, tps=11.0, n_samples=2, limit=2)]
    res = plot_module.plot_chair_speed(records_from(runs), tmp_path / "p")
    assert res.titles == ["llava-1.5-7b / coco · n=10 · 64 new tokens", "llava-1.5-7b / coco · n=2 (limit=2) · 64 new tokens"]


def test_plot_with_chair_i_undefined_everywhere(tmp_path: Path) -> None:
    res = plot_module.plot_chair_speed(records_from([make_result(chair_s=0.5, chair_i=None, tps=10.0)]), tmp_path / "p")
    assert res.fronts["CHAIR_S"] and "CHAIR_I" not in res.fronts and res.label_overlaps == 0


def test_with_allow_mixed_the_baseline_is_the_run_over_the_same_samples() -> None:
    runs = [
        make_result(chair_s=0.5, chair_i=0.1, tps=10.0, n_samples=12, sample_set="all12"),
        make_result(chair_s=0.9, chair_i=0.1, tps=20.0, n_samples=2, limit=2, sample_set="first2"),
        make_result(method="fastv", chair_s=0.4, chair_i=0.1, tps=15.0, n_samples=12, sample_set="all12"),
    ]
    t = chair_table(records_from(runs), baseline="vanilla", allow_mixed=True)
    assert t.cell(("fastv", "greedy", ""), "llava-1.5-7b", "decode_tps_ratio").mean == pytest.approx(1.5)
