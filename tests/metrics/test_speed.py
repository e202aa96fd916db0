"""Speed aggregates (metrics.md §5, required test 18): ratios of sums on hand-made timings."""

from __future__ import annotations

import pytest

from vh_bench.metrics.speed import Timing, speed_from_rows, speed_summary

# metrics.md §5 toy: (n_new_tokens, t_prefill_s, t_decode_s) of three timed samples.
TOY = [(10, 0.20, 0.90), (1, 0.25, 0.00), (50, 0.30, 4.90)]


def _rows(triples, **extra):
    return [
        {"sample_id": f"s{i}", "n_new_tokens": n, "t_prefill_s": p, "t_decode_s": d, "error": None, "warmup": False, **extra}
        for i, (n, p, d) in enumerate(triples)
    ]


def test_toy_aggregates() -> None:
    s = speed_summary([Timing(*t) for t in TOY])
    assert s["decode_tokens_per_s"] == pytest.approx(9.999999999999998, abs=1e-9)
    assert s["decode_tokens_per_s"] == pytest.approx(58 / 5.8, abs=1e-9)
    assert s["e2e_tokens_per_s"] == pytest.approx(61 / 6.55, abs=1e-9)
    # Not the mean of per-sample ratios (7.57...): the aggregate is a ratio of sums.
    mean_of_ratios = sum(n / (p + d) for n, p, d in TOY) / 3
    assert abs(mean_of_ratios - 7.57) < 0.01 and abs(s["e2e_tokens_per_s"] - mean_of_ratios) > 1
    assert s["prefill_ms_mean"] == pytest.approx(250.0, abs=1e-9)
    assert s["prefill_ms_p50"] == pytest.approx(250.0, abs=1e-9)
    assert s["n_timed"] == 3
    assert s["decode_tokens"] == 58
    # Per-token decode latency over samples with ≥ 2 tokens: 900/9 = 100 ms and 4900/49 = 100 ms.
    assert s["decode_ms_per_token_p50"] == pytest.approx(100.0, abs=1e-9)
    assert s["decode_ms_per_token_p90"] == pytest.approx(100.0, abs=1e-9)


def test_single_token_samples_add_no_decode_tokens() -> None:
    base = speed_summary([Timing(10, 0.2, 0.9)])
    with_one = speed_summary([Timing(10, 0.2, 0.9), Timing(1, 0.25, 0.0)])
    assert with_one["decode_tokens"] == base["decode_tokens"] == 9
    assert with_one["decode_tokens_per_s"] == pytest.approx(base["decode_tokens_per_s"], abs=1e-12)
    # ...but they do count end to end (1 token in 0.25 s).
    assert with_one["e2e_tokens_per_s"] == pytest.approx(11 / 1.35, abs=1e-9)
    only_one = speed_summary([Timing(1, 0.25, 0.0)])
    assert only_one["decode_tokens_per_s"] is None and only_one["decode_ms_per_token_p50"] is None


def test_percentiles_interpolate() -> None:
    # Per-token latencies 10, 20, ..., 100 ms: p50 = 55, p90 = 91 (linear interpolation).
    s = speed_summary([Timing(2, 0.1, k / 100) for k in range(1, 11)])
    assert s["decode_ms_per_token_p50"] == pytest.approx(55.0, abs=1e-9)
    assert s["decode_ms_per_token_p90"] == pytest.approx(91.0, abs=1e-9)


def test_warmup_and_errors_are_excluded() -> None:
    rows = _rows(TOY, device="cpu")
    warm = _rows([(64, 9.0, 99.0)], device="cpu")[0] | {"sample_id": "w", "warmup": True}
    err = _rows([(0, 0.0, 0.0)], device="cpu")[0] | {"sample_id": "e", "error": "bad image"}
    s = speed_from_rows([warm, *rows, err])
    assert s["decode_tokens_per_s"] == pytest.approx(9.999999999999998, abs=1e-9)
    assert s["e2e_tokens_per_s"] == pytest.approx(61 / 6.55, abs=1e-9)
    assert s["prefill_ms_mean"] == pytest.approx(250.0, abs=1e-9)
    assert (s["n_timed"], s["n_warmup"]) == (3, 1)
    assert s["comparable"] is True and s["not_comparable_because"] is None


def test_empty() -> None:
    s = speed_from_rows([])
    assert s["n_timed"] == 0 and s["decode_tokens_per_s"] is None and s["e2e_tokens_per_s"] is None


ENV = {"device": "NVIDIA A100", "dtype": "float16", "attn_backend": "sdpa", "torch_threads": 8, "torch": "2.13.0"}


def test_resumed_on_another_device_is_not_comparable() -> None:
    rows = _rows(TOY[:2], device="cuda") + _rows(TOY[2:], device="cpu")
    s = speed_from_rows(rows)
    assert s["comparable"] is False and s["devices"] == ["cpu", "cuda"]
    assert "2 devices" in s["not_comparable_because"]


def test_mixed_settings_are_not_comparable() -> None:
    same = speed_from_rows(_rows(TOY, device="cuda", speed_env=ENV))
    assert same["comparable"] is True and same["environments"] == [ENV]
    mixed = _rows(TOY[:2], device="cuda", speed_env=ENV) + _rows(TOY[2:], device="cuda", speed_env={**ENV, "device": "NVIDIA H100"})
    s = speed_from_rows(mixed)
    assert s["comparable"] is False
    assert "differ in device" in s["not_comparable_because"]
    # A warm-up line from another setting does not poison the timed ones.
    warm = _rows([(5, 1.0, 1.0)], device="cuda", speed_env={**ENV, "torch_threads": 1})[0] | {"warmup": True}
    assert speed_from_rows([warm, *_rows(TOY, device="cuda", speed_env=ENV)])["comparable"] is True
