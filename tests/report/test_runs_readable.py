"""The runs table: key columns in markdown/LaTeX, every column in the CSV."""

from __future__ import annotations

import io

import pandas as pd

from tests.report.fixtures import make_result
from vh_bench.report.build import build_report

HALC_WORDS = ["sink", "microwave", "toaster"]
RUNS = [
    make_result(method="vanilla", chair_s=0.5, chair_i=0.2, tps=10.0),
    make_result(method="vasparse", hyper={"lam": 0.1, "alpha": 0.1}, chair_s=0.4, chair_i=0.1, tps=9.0),
    make_result(method="vasparse", hyper={"lam": 0.5, "alpha": 0.1}, chair_s=0.3, chair_i=0.1, tps=9.0),
    make_result(method="fastv", hyper={"k": 2, "ratio": 0.5}, chair_s=0.6, chair_i=0.3, tps=12.0),
    make_result(method="halc", hyper={"add_words": HALC_WORDS, "beam_size": 1}, chair_s=0.2, chair_i=0.1, tps=1.0),
]


def _md_header(text: str) -> list[str]:
    return [c.strip() for c in text.splitlines()[0].strip("|").split("|")]


def test_markdown_keeps_key_columns_and_swept_hyperparameters() -> None:
    report = build_report(RUNS)
    header = _md_header(report.render("runs", "md"))
    assert {"model", "dataset", "method", "CHAIR_S", "CHAIR_I", "decode_tok_s", "n", "run"} <= set(header)
    # lam was swept within vasparse: shown. alpha (same in both vasparse runs), fastv's k (one run),
    # HALC's word list and the timing details are not.
    assert "method.lam" in header
    for hidden in ("method.alpha", "method.k", "method.add_words", "method.beam_size", "prefill_ms", "ms_tok_p90"):
        assert hidden not in header
    assert len(report.render("runs", "md").splitlines()) == len(RUNS) + 2
    latex_head = report.render("runs", "latex").splitlines()[2]
    assert "method.lam" in latex_head and "add\\_words" not in latex_head


def test_csv_keeps_every_column() -> None:
    report = build_report(RUNS)
    df = pd.read_csv(io.StringIO(report.render("runs", "csv")))
    assert {"method.alpha", "method.k", "method.add_words", "method.lam", "prefill_ms", "ms_tok_p90"} <= set(df.columns)
    halc = df[df["method"] == "halc"].iloc[0]
    assert halc["method.add_words"] == '["sink", "microwave", "toaster"]'
