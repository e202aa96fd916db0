"""The run profile: exclusive stage accounting (fake clock) and one instrumented tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest

import vh_bench.bench.profile as prof
from vh_bench.bench.profile import Stages, breakdown, run_profile


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_nested_stages_are_exclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(prof.time, "perf_counter", clock)
    st = Stages()

    def forward(**kw):
        clock.now += 2.0

    fwd = st.wrap(lambda **kw: "forward.prefill" if kw.get("pixel_values") is not None else "forward.decode", forward)

    def loop():
        clock.now += 0.5
        fwd(pixel_values=1)
        fwd()
        fwd()
        clock.now += 0.25

    def run():
        clock.now += 1.0
        st.wrap("decode.loop", loop)()

    st.wrap("runner.other", run)()
    assert dict(st.seconds) == {"forward.prefill": 2.0, "forward.decode": 4.0, "decode.loop": 0.75, "runner.other": 1.0}
    assert dict(st.calls) == {"forward.prefill": 1, "forward.decode": 2, "decode.loop": 1, "runner.other": 1}
    b = breakdown(st.seconds, st.calls, wall=7.75)
    assert b["model_forward_s"] == 6.0 and b["harness_s"] == 1.75 and b["unaccounted_s"] == 0.0
    assert b["per_sample_s"] == 0.75 and b["per_run_s"] == 1.0
    assert b["outside_forwards_share"] == pytest.approx(1.75 / 7.75)


def test_shares_with_and_without_the_one_off_setup() -> None:
    stages = {"forward.decode": 94.0, "model.load": 15.0, "scoring.nltk": 5.0, "scoring": 1.0, "decode.loop": 1.0}
    b = breakdown(stages, {}, wall=120.0)
    # 4 s outside every stage count as per-run harness: 1 + 1 + 4 = 6 s over the 100 s without set-up.
    assert b["unaccounted_s"] == pytest.approx(4.0)
    assert b["harness_s"] == pytest.approx(6.0) and b["setup_s"] == pytest.approx(20.0)
    assert (b["per_sample_s"], b["per_run_s"]) == (pytest.approx(1.0), pytest.approx(5.0))
    assert b["harness_share_excl_setup"] == pytest.approx(0.06)
    assert b["per_sample_share"] == pytest.approx(1.0 / 95.0)
    assert b["outside_forwards_share"] == pytest.approx(26.0 / 120.0)
    assert list(b["stages"]) == ["forward.decode", "model.load", "scoring.nltk", "scoring", "decode.loop"]


@pytest.mark.slow
def test_profile_of_a_tiny_run(tmp_path: Path) -> None:
    rep = run_profile(
        [
            "model=tiny",
            "model.tiny.image_size=224",
            "runtime.limit=2",
            "generation.max_new_tokens=3",
        ],
        out_dir=tmp_path / "bench",
    )
    st = rep["breakdown"]["stages"]
    # Two samples: one prefill each, up to two decode steps each; every stage wrapped was reached.
    assert st["forward.prefill"]["calls"] == 2
    assert 2 <= st["forward.decode"]["calls"] <= 4
    assert st["decode.loop"]["calls"] == 2 and st["scoring"]["calls"] == 1 and st["model.load"]["calls"] == 1
    assert st["store.sample_lines"]["calls"] == 2
    # Image loading/preprocessing (prefetch) and the scorer's NLTK/GT loading (warm-up) run on
    # worker threads, overlapped with generation: reported apart from the wall-time shares.
    background = rep["breakdown"]["background"]
    assert {"data.image_load", "data.preprocess"} <= set(background)
    assert "data.image_load" not in st and "data.preprocess" not in st
    text = (tmp_path / "bench" / "profile.md").read_text()
    assert "model forward, prefill" in text and "of the wall time without the one-off set-up" in text
    # The run went into a fresh temporary results directory (nothing resumed), removed afterwards.
    assert [p.name for p in (tmp_path / "bench").iterdir()] == ["profile.md"]
