"""The speed bench: override handling, interleaving, aggregation (no wall-clock thresholds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from vh_bench.bench.memory import MemoryPeak
from vh_bench.bench.speed import (
    Contender,
    Prepared,
    Timings,
    compose_method,
    interleaved_timings,
    run_speed_bench,
    speed_markdown,
    split_overrides,
    summarise,
    with_defaults,
)
from vh_bench.config import gen_config
from vh_bench.errors import ConfigError
from vh_bench.metrics.speed import Timing
from vh_bench.paths import config_dir


def test_method_list_and_defaults() -> None:
    methods, rest = split_overrides(["method=fastv,topk,vanilla", "model=tiny", "generation.max_new_tokens=8"])
    assert methods == ["fastv", "topk", "vanilla"]
    assert rest == ["model=tiny", "generation.max_new_tokens=8"]
    assert split_overrides(["runtime.limit=2"]) == (None, ["runtime.limit=2"])
    with pytest.raises(ConfigError):
        split_overrides(["model"])
    # A given key replaces the bench default; the others stay.
    ovs = with_defaults(["model=tiny", "+runtime.limit=2"], {"model": "bench", "runtime.limit": "4", "x": "1"})
    assert ovs == ["x=1", "model=tiny", "+runtime.limit=2"]


def test_generation_given_to_the_bench_beats_the_dataset_default() -> None:
    from vh_bench.runner import build_dataset

    cfg = compose_method("vanilla", ["dataset=demo_pope", "generation.max_new_tokens=32"])
    dataset = build_dataset(cfg)
    assert dataset.max_new_tokens == 8  # demo_pope's default, which only applies when none is given
    assert gen_config(cfg, dataset.max_new_tokens).max_new_tokens == 32
    assert gen_config(compose_method("vanilla", ["dataset=demo_pope"]), dataset.max_new_tokens).max_new_tokens == 8


class FakeMethod:
    """Stands in for a Method: records its calls, returns fixed timings, can fail on one sample."""

    def __init__(self, name: str, log: list, fail_on: str | None = None) -> None:
        self.name, self.log, self.fail_on = name, log, fail_on

    def generate(self, adapter, inputs, gen, seeds):
        if inputs == self.fail_on:
            raise RuntimeError("boom")
        self.log.append((self.name, inputs))
        return SimpleNamespace(n_new_tokens=5, t_prefill_s=0.1, t_decode_s=0.4)


def _contenders(log: list, names: str, fail: dict | None = None):
    return [Contender(n, None, FakeMethod(n, log, (fail or {}).get(n)), None) for n in names]  # type: ignore[arg-type]


def _samples(n: int):
    # The fake methods see the "inputs" as the sample id.
    return [Prepared(f"s{i}", f"s{i}", None) for i in range(n)]  # type: ignore[arg-type]


def test_interleaving_rotates_and_warmup_is_untimed() -> None:
    calls: list = []
    t = interleaved_timings(_contenders(calls, "abc"), _samples(2), None, repeats=2, warmup=1)  # type: ignore[arg-type]
    # Warm-up: each method once on the first sample, before any timed call.
    assert calls[:3] == [("a", "s0"), ("b", "s0"), ("c", "s0")]
    # speed_side_by_side: round by round on one sample; the order rotates from sample to sample.
    assert t.order == [["a", "b", "c"], ["b", "c", "a"]]
    assert calls[3:] == [("a", "s0"), ("b", "s0"), ("c", "s0")] * 2 + [("b", "s1"), ("c", "s1"), ("a", "s1")] * 2
    # Repetition r of a method = its round r on every sample.
    assert {k: [len(r) for r in v] for k, v in t.per_rep.items()} == {"a": [2, 2], "b": [2, 2], "c": [2, 2]}
    assert t.per_rep["a"][0][0] == Timing(5, 0.1, 0.4)


def test_a_failing_method_is_dropped_and_reported() -> None:
    calls: list = []
    cs = _contenders(calls, ["ok", "bad", "also"], fail={"bad": "s1"})
    t = interleaved_timings(cs, _samples(2), None, repeats=2, warmup=0)  # type: ignore[arg-type]
    assert list(t.per_rep) == ["ok", "also"] and "RuntimeError on s1: boom" in t.failed["bad"]
    assert [len(r) for r in t.per_rep["ok"]] == [2, 2] and [len(r) for r in t.per_rep["also"]] == [2, 2]
    # Failing at warm-up drops the method before any timing.
    t2 = interleaved_timings(_contenders([], ["ok", "bad"], fail={"bad": "s0"}), _samples(2), None, repeats=1, warmup=1)  # type: ignore[arg-type]
    assert list(t2.per_rep) == ["ok"] and t2.order == [["ok"], ["ok"]]


def test_summary_medians_and_same_repetition_ratios() -> None:
    # Three repetitions of two samples each; vanilla decodes 9 + 9 tokens, fast 9 + 9 tokens.
    van = [[Timing(10, 0.2, 0.9), Timing(10, 0.2, 0.9)], [Timing(10, 0.3, 1.8), Timing(10, 0.3, 1.8)], [Timing(10, 0.2, 0.6), Timing(10, 0.2, 0.6)]]
    fast = [[Timing(10, 0.1, 0.45), Timing(10, 0.1, 0.45)], [Timing(10, 0.1, 0.45), Timing(10, 0.1, 0.45)], [Timing(10, 0.1, 0.6), Timing(10, 0.1, 0.6)]]
    t = Timings(per_rep={"vanilla": van, "fast": fast})
    mem = {"vanilla": MemoryPeak(1000, 200, 800, "x"), "fast": MemoryPeak(900, 100, 800, "x")}
    s = summarise(t, "vanilla", mem)
    # vanilla decode TPS per repetition: 18/1.8 = 10, 18/3.6 = 5, 18/1.2 = 15 → median 10, min 5, max 15.
    assert s["vanilla"]["decode_tps"] == {"median": pytest.approx(10.0), "min": pytest.approx(5.0), "max": pytest.approx(15.0), "n": 3}
    # fast: 20, 20, 15; ratios within each repetition: 20/10, 20/5, 15/15 → median 2, min 1, max 4.
    r = s["fast"]["decode_tps_ratio"]
    assert (r["median"], r["min"], r["max"]) == (pytest.approx(2.0), pytest.approx(1.0), pytest.approx(4.0))
    assert s["vanilla"]["decode_tps_ratio"]["median"] == pytest.approx(1.0)
    # prefill seconds: mean per repetition (0.2, 0.3, 0.2) → median 0.2
    assert s["vanilla"]["prefill_s"]["median"] == pytest.approx(0.2)
    # e2e ratios per repetition: 2.2/1.1, 4.2/1.1, 1.6/1.4 → the smallest is the third.
    assert s["fast"]["e2e_tps_ratio"]["min"] == pytest.approx((20 / 1.4) / (20 / 1.6))
    assert s["fast"]["peak_mem_ratio"]["median"] == pytest.approx(0.9)
    assert s["fast"]["peak_working_ratio"]["median"] == pytest.approx(0.5)
    assert s["fast"]["peak_mem_bytes"] == {"median": 900, "min": 900, "max": 900, "n": 1}


@pytest.fixture
def configs_with_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's configs plus `vanilla_copy` (same class) and `broken` (unknown class)."""
    cfg = tmp_path / "configs"
    shutil.copytree(config_dir(), cfg)
    (cfg / "method" / "vanilla_copy.yaml").write_text("_target_: methods.vanilla.Vanilla\n")
    (cfg / "method" / "broken.yaml").write_text("_target_: methods.nope.Nope\n")
    monkeypatch.setenv("VH_BENCH_CONFIG_DIR", str(cfg))
    return cfg


@pytest.mark.slow
def test_bench_end_to_end_on_the_tiny_model(tmp_path: Path, configs_with_copy: Path) -> None:
    overrides = [
        "method=vanilla_copy,broken",  # vanilla is added as the baseline
        "model=tiny",
        "model.tiny.image_size=224",
        "runtime.device=cpu",
        "runtime.dtype=float32",
        "runtime.limit=2",
        "generation.max_new_tokens=3",
        f"paths.results_dir={tmp_path / 'results'}",
    ]
    res = run_speed_bench(overrides, repeats=2, out_dir=tmp_path / "bench", progress=False)
    assert res["setup"]["methods"] == ["vanilla", "vanilla_copy"]
    assert res["skipped"]["broken"].startswith("ConfigError")
    assert res["setup"]["n_samples"] == 2 and res["setup"]["generation"]["max_new_tokens"] == 3
    for name in ("vanilla", "vanilla_copy"):
        m = res["methods"][name]
        for key in ("decode_tps", "prefill_s", "e2e_tps", "peak_mem_bytes", "decode_tps_ratio", "e2e_tps_ratio", "peak_mem_ratio"):
            assert set(m[key]) == {"median", "min", "max", "n"}, key
        assert m["decode_tps"]["n"] == 2 and m["decode_tps"]["min"] <= m["decode_tps"]["median"] <= m["decode_tps"]["max"]
        assert m["mean_new_tokens"]["median"] == 3.0
    assert res["methods"]["vanilla"]["decode_tps_ratio"]["median"] == 1.0
    # Same class, same inputs: the same allocations, so the same peak.
    assert res["methods"]["vanilla_copy"]["peak_mem_ratio"]["median"] == pytest.approx(1.0, abs=1e-3)
    assert res["methods"]["vanilla"]["peak_working_bytes"]["median"] > 0
    assert res["environment"]["batch_size"] == 1 and "vh_attn" in res["environment"]["attention"]
    saved = json.loads((tmp_path / "bench" / "speed.json").read_text())
    assert saved["methods"].keys() == res["methods"].keys()
    md = (tmp_path / "bench" / "speed.md").read_text()
    assert md == speed_markdown(saved) + "\n"
    assert "| vanilla_copy |" in md and "Skipped: broken" in md


@pytest.mark.slow
def test_one_new_token_has_no_decode_rate_and_does_not_fail(tmp_path: Path) -> None:
    # One new token: decode tok/s is 0 for every method, so no decode ratio (was a ZeroDivisionError).
    overrides = [
        "method=vanilla,topk",
        "model=tiny",
        "model.tiny.image_size=224",
        "runtime.device=cpu",
        "runtime.dtype=float32",
        "runtime.limit=1",
        "generation.max_new_tokens=1",
        f"paths.results_dir={tmp_path / 'results'}",
    ]
    res = run_speed_bench(overrides, repeats=1, out_dir=tmp_path / "bench", memory=False, progress=False)
    assert res["setup"]["methods"] == ["vanilla", "topk"] and not res["failed"]
    for m in res["methods"].values():
        assert m["mean_new_tokens"]["median"] == 1.0
        assert m["decode_tps_ratio"]["median"] is None
        assert m["e2e_tps_ratio"]["median"] is not None
