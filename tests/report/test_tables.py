"""Paper-layout tables (VASparse Tables 1 and 2) on a results directory written by the test."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.report.fixtures import CHAIR_RUNS, POPE_RUNS, make_result, write_results
from vh_bench.report.__main__ import main as report_main
from vh_bench.report.build import build_report, write_report
from vh_bench.report.paper import chair_table, decoding_label, pope_table
from vh_bench.report.records import find_results, load_results, records_from
from vh_bench.report.table import format_table, results_frame

GREEDY = ("vanilla", "greedy", "")
FASTV2 = ("FastV", "greedy", "k=2")
FASTV3 = ("FastV", "greedy", "k=3")
VCD = ("VCD", "greedy", "")


def _records(results_dir: Path):
    return records_from(load_results(find_results(results_dir)))


def test_table1_rows_columns_and_seed_aggregation(results_dir: Path) -> None:
    t = chair_table(_records(results_dir))
    # Baseline first, then by label; FastV's swept k is the setting; its constant ratio is not.
    assert t.rows == [GREEDY, FASTV2, FASTV3, VCD]
    assert t.groups == ["llava-1.5-7b", "llava-1.5-13b"]
    assert [m.key for g, m in t.columns if g == "llava-1.5-7b"] == ["n", "max_new", "Len", "CHAIR_I", "CHAIR_S", "decode_tps"]
    cs = t.cell(GREEDY, "llava-1.5-7b", "CHAIR_S")
    assert cs is not None and cs.n == 3
    assert cs.mean == pytest.approx(52.0, abs=1e-9)
    assert cs.std == pytest.approx(2.0, abs=1e-9)  # sample std of 50, 52, 54
    tps = t.cell(GREEDY, "llava-1.5-7b", "decode_tps")
    assert (tps.mean, tps.std) == (pytest.approx(12.0), pytest.approx(2.0))
    assert t.cell(FASTV2, "llava-1.5-13b", "CHAIR_S") is None
    assert t.cell(VCD, "llava-1.5-7b", "decode_tps").flag == "†"


def test_table1_markdown(results_dir: Path) -> None:
    md = chair_table(_records(results_dir)).render("md").splitlines()
    head = md[2]
    assert head.startswith("| Method | Decoding | Setting | llava-1.5-7b n | llava-1.5-7b max new | llava-1.5-7b Len | "
                           "llava-1.5-7b CHAIR_I ↓ | llava-1.5-7b CHAIR_S ↓ | llava-1.5-7b tokens/s ↑ |")
    # n and max new are settings: no seed spread; Len and the metrics get mean ± std over seeds.
    assert md[4] == "| vanilla | greedy |  | 10 | 64 | 60.0 ± 0.0 | 15.0 ± 1.0 | 52.0 ± 2.0 | 12.00 ± 2.00 | 10 | 64 | 60.0 | 10.0 | 40.0 | 8.00 |"
    assert md[5] == "| FastV | greedy | k=2 | 10 | 64 | 60.0 | 17.0 | 55.0 | 15.00 | – | – | – | – | – | – |"
    assert md[7] == "| VCD | greedy |  | 10 | 64 | 60.0 | 12.0 | 48.0 | 6.00† | – | – | – | – | – | – |"
    assert any("not comparable" in line for line in md)


def test_table1_baseline_ratios(results_dir: Path) -> None:
    t = chair_table(_records(results_dir), baseline="vanilla")
    assert [m.key for g, m in t.columns if g == "llava-1.5-7b"][-1] == "decode_tps_ratio"
    # Ratio of seed means: FastV k=2 15 / vanilla mean 12.
    assert t.cell(FASTV2, "llava-1.5-7b", "decode_tps_ratio").mean == pytest.approx(1.25)
    assert t.cell(FASTV3, "llava-1.5-7b", "decode_tps_ratio").mean == pytest.approx(0.75)
    assert t.cell(GREEDY, "llava-1.5-13b", "decode_tps_ratio").mean == pytest.approx(1.0)
    assert "| FastV | greedy | k=2 | 10 | 64 | 60.0 | 17.0 | 55.0 | 15.00 | ×1.25 |" in t.render("md")
    assert r"$\times$1.25" in t.render("latex")


def test_ratio_matches_the_baseline_with_the_same_decoding(tmp_path: Path) -> None:
    runs = [
        make_result(chair_s=0.5, chair_i=0.1, tps=10.0),
        make_result(strategy="beam", num_beams=3, chair_s=0.4, chair_i=0.1, tps=4.0),
        make_result(method="fastv", strategy="beam", num_beams=3, chair_s=0.4, chair_i=0.1, tps=6.0),
    ]
    t = chair_table(records_from(runs), baseline="vanilla")
    assert t.cell(("fastv", "beam(3)", ""), "llava-1.5-7b", "decode_tps_ratio").mean == pytest.approx(1.5)


def test_table1_csv_has_mean_std_and_n(results_dir: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(chair_table(_records(results_dir)).render("csv"))))
    assert [r["Method"] for r in rows] == ["vanilla", "FastV", "FastV", "VCD"]
    v = rows[0]
    assert float(v["llava-1.5-7b/CHAIR_S"]) == 52.0
    assert float(v["llava-1.5-7b/CHAIR_S_std"]) == 2.0
    assert v["llava-1.5-7b/CHAIR_S_n"] == "3"
    assert rows[1]["llava-1.5-13b/CHAIR_S"] == ""


def test_table1_latex_groups_models(results_dir: Path) -> None:
    tex = chair_table(_records(results_dir)).render("latex")
    assert r"\multicolumn{6}{c}{llava-1.5-7b} & \multicolumn{6}{c}{llava-1.5-13b}" in tex
    assert r"\cmidrule(lr){4-9} \cmidrule(lr){10-15}" in tex
    assert (r"vanilla & greedy &  & 10 & 64 & 60.0 $\pm$ 0.0 & 15.0 $\pm$ 1.0 & 52.0 $\pm$ 2.0 & 12.00 $\pm$ 2.00 & "
            r"10 & 64 & 60.0 & 10.0 & 40.0 & 8.00 \\") in tex
    assert r"6.00$^\dagger$" in tex
    assert tex.count(r"\begin{tabular}{lllcccccccccccc}") == 1


def test_single_seed_has_no_spread(tmp_path: Path) -> None:
    t = chair_table(records_from([make_result(chair_s=0.5, chair_i=0.1, tps=10.0)]))
    md = t.render("md")
    assert "±" not in md and "| vanilla | greedy |  | 10 | 64 | 60.0 | 10.0 | 50.0 | 10.00 |" in md
    assert "_std" not in t.render("csv")


def test_table2_pope_per_split_with_seeds(results_dir: Path) -> None:
    t = pope_table(_records(results_dir))
    assert t.rows == [GREEDY, VCD]
    assert t.groups == ["llava-1.5-7b POPE coco", "llava-1.5-7b OPOPE F1 (gt_cache)"]
    pope = "llava-1.5-7b POPE coco"
    assert [m.key for g, m in t.columns if g == pope] == ["F1.random", "F1.popular", "F1.adversarial", "F1.mean"]
    r = t.cell(GREEDY, pope, "F1.random")
    assert r.n == 2 and r.mean == pytest.approx(90.5) and r.std == pytest.approx(0.7071067811865476)
    # Avg. per seed over the three splits (85, 86), then mean ± std over seeds.
    avg = t.cell(GREEDY, pope, "F1.mean")
    assert avg.values == [pytest.approx(85.0), pytest.approx(86.0)]
    # VCD ran only the random split: no average.
    assert t.cell(VCD, pope, "F1.random").mean == pytest.approx(88.0)
    assert t.cell(VCD, pope, "F1.mean") is None
    assert t.cell(GREEDY, "llava-1.5-7b OPOPE F1 (gt_cache)", "F1.mean").mean == pytest.approx(60.0)
    md = t.render("md").splitlines()
    assert md[4] == "| vanilla | greedy |  | 90.5 ± 0.7 | 85.5 ± 0.7 | 80.5 ± 0.7 | 85.5 ± 0.7 | 70.0 | 60.0 | 50.0 | 60.0 |"
    tex = t.render("latex")
    assert r"\multicolumn{4}{c}{llava-1.5-7b POPE coco}" in tex and "Random & Popular & Adversarial & Avg." in tex


def test_pope_block_under_metrics_pope_is_read_too() -> None:
    res = make_result()
    res["metrics"] = {"pope": {"split": "popular", "f1": 0.8, "source": "aokvqa"}}
    t = pope_table(records_from([res]))
    assert t.groups == ["llava-1.5-7b POPE aokvqa"]
    assert t.cell(GREEDY, "llava-1.5-7b POPE aokvqa", "F1.popular").mean == pytest.approx(80.0)


def test_decoding_labels() -> None:
    assert decoding_label({"strategy": "greedy", "max_new_tokens": 64}) == "greedy"
    assert decoding_label({"strategy": "beam", "num_beams": 3, "temperature": 1.0}) == "beam(3)"
    assert decoding_label({"strategy": "sample", "top_p": 0.9, "max_new_tokens": 512}, show_max_new=True) == "sample (top_p=0.9, 512 tok)"


def test_runs_table_one_row_per_run(results_dir: Path) -> None:
    df = results_frame(load_results(find_results(results_dir)))
    assert len(df) == len(CHAIR_RUNS) + len(POPE_RUNS)
    assert {"CHAIR_S", "decode_tok_s", "POPE_F1.random", "OPOPE_F1.random", "method.k"} <= set(df.columns)
    assert format_table(df, "md").count("\n") == len(df) + 1
    assert format_table(df, "latex").startswith(r"\begin{tabular}")
    with pytest.raises(ValueError):
        format_table(df, "html")


def test_write_report_files(results_dir: Path, tmp_path: Path) -> None:
    report = build_report(load_results(find_results(results_dir)), baseline="vanilla")
    written = write_report(report, tmp_path / "out")
    names = sorted(p.name for p in written)
    assert names == sorted(
        [f"{t}.{e}" for t in ("table1_chair", "table2_pope", "runs") for e in ("md", "csv", "tex")]
        + ["chair_vs_speed.png", "chair_vs_speed.pdf"]
    )
    assert all(p.stat().st_size > 0 for p in written)


def test_cli_prints_paper_tables(results_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_file = tmp_path / "t.md"
    assert report_main([str(results_dir), "--baseline", "vanilla", "--out", str(out_file)]) == 0
    text = capsys.readouterr().out
    assert "Table 1" in text and "Table 2" in text and "TPS ×" in text
    assert out_file.read_text().strip() == text.strip()
    assert report_main([str(results_dir), "--table", "runs", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("model,dataset,method,")
    assert report_main([str(tmp_path / "missing")]) == 2


def test_cli_only_pope(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write_results(tmp_path / "r", [make_result(pope=("random", 0.9))])
    assert report_main([str(d)]) == 0
    text = capsys.readouterr().out
    assert "Table 2" in text and "Table 1" not in text
