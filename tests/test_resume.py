"""Nothing finished is ever lost: kill + resume, torn lines, shards in parallel, atomic results."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import FAST, results_override
from vh_bench.config import compose
from vh_bench.paths import project_root
from vh_bench.runner import plan, run
from vh_bench.store import RunStore, atomic_write_json

# Fields of a sample line that must not depend on interruptions (timings and warm-up flags do).
STABLE = ("sample_id", "text", "token_ids", "n_new_tokens", "error", "image_id")


def _stable_rows(run_dir: Path) -> list[tuple]:
    rows = RunStore(run_dir).rows()
    return sorted(tuple(json.dumps(r.get(k)) for k in STABLE) for r in rows)


def _cli(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vh_bench", *FAST, results_override(tmp), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _count_lines(run_dir: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in run_dir.glob("samples*.jsonl"))


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    extra = ("runtime.limit=8", "generation.max_new_tokens=24", "model.tiny.image_size=336")
    ref = run(compose([*FAST, results_override(tmp_path / "ref"), *extra]))
    killed_dir = tmp_path / "killed"
    run_dir = plan(compose([*FAST, results_override(killed_dir), *extra])).run_dir
    assert run_dir.name == Path(ref["run_dir"]).name  # same content → same fingerprint

    proc = subprocess.Popen(_cli(killed_dir, *extra), cwd=project_root(), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if run_dir.is_dir() and _count_lines(run_dir) >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=60)
    n_before = _count_lines(run_dir)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert 2 <= n_before < 8
    assert not (run_dir / "results.json").exists()

    resumed = run(compose([*FAST, results_override(killed_dir), *extra]))
    assert resumed["run"]["n_already_done"] == n_before
    assert resumed["run"]["n_generated_now"] == 8 - n_before
    assert _stable_rows(run_dir) == _stable_rows(Path(ref["run_dir"]))
    assert resumed["metrics"]["chair"] == ref["metrics"]["chair"]
    assert resumed["complete"] and resumed["n_done"] == 8


def test_torn_last_line_is_dropped_and_redone(tmp_path: Path) -> None:
    cfg = compose([*FAST, results_override(tmp_path), "runtime.limit=3"])
    first = run(cfg)
    samples_file = Path(first["run_dir"]) / "samples.jsonl"
    lines = samples_file.read_text().splitlines(keepends=True)
    torn = lines[-1][: len(lines[-1]) // 2]  # killed mid-write: half a line, no newline
    samples_file.write_text("".join(lines[:-1]) + torn)
    assert len(RunStore(samples_file.parent).rows()) == 2
    again = run(cfg)
    assert again["run"]["n_generated_now"] == 1
    rows = [json.loads(x) for x in samples_file.read_text().splitlines()]
    assert [r["sample_id"] for r in rows] == [json.loads(x)["sample_id"] for x in lines]
    assert rows[-1]["text"] == json.loads(lines[-1])["text"]


def test_duplicate_lines_are_counted_once(tmp_path: Path) -> None:
    cfg = compose([*FAST, results_override(tmp_path), "runtime.limit=2"])
    first = run(cfg)
    run_dir = Path(first["run_dir"])
    # A second shard file repeating a finished sample (e.g. two jobs raced on it).
    line = (run_dir / "samples.jsonl").read_text().splitlines()[0]
    (run_dir / "samples.0-of-2.jsonl").write_text(line + "\n")
    again = run(cfg)
    assert again["n_done"] == 2 and again["metrics"]["chair"]["n_captions"] == 2


def test_two_shard_processes_merge_to_the_unsharded_run(tmp_path: Path) -> None:
    extra = ("runtime.limit=6",)
    ref = run(compose([*FAST, results_override(tmp_path / "ref"), *extra]))
    out = tmp_path / "sharded"
    procs = [
        subprocess.Popen(_cli(out, *extra, f"runtime.shard.index={i}", "runtime.shard.count=2"),
                         cwd=project_root(), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
    run_dir = Path(plan(compose([*FAST, results_override(out), *extra])).run_dir)
    shard_files = sorted(f.name for f in run_dir.glob("samples*.jsonl"))
    assert shard_files == ["samples.0-of-2.jsonl", "samples.1-of-2.jsonl"]
    merged = run(compose([*FAST, results_override(out), *extra]))  # scores, generates nothing
    assert merged["run"]["n_generated_now"] == 0
    assert _stable_rows(run_dir) == _stable_rows(Path(ref["run_dir"]))
    assert merged["metrics"]["chair"] == ref["metrics"]["chair"]


def test_changing_shard_count_between_attempts_covers_every_sample_once(tmp_path: Path) -> None:
    base = [*FAST, results_override(tmp_path), "runtime.limit=7"]
    run(compose([*base, "runtime.shard.index=0", "runtime.shard.count=3"]))
    run(compose([*base, "runtime.shard.index=1", "runtime.shard.count=2"]))
    final = run(compose([*base, "runtime.shard.index=0", "runtime.shard.count=2"]))
    run_dir = Path(final["run_dir"])
    ids = [json.loads(x)["sample_id"] for f in run_dir.glob("samples*.jsonl") for x in f.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 7
    assert final["complete"] is True


def test_torchrun_environment_selects_the_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    p = plan(compose([*FAST, results_override(tmp_path)]))
    assert (p.shard_index, p.shard_count) == (1, 3)


def test_disk_full_leaves_previous_results_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "results.json"
    atomic_write_json(target, {"version": 1})

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(target, {"version": 2, "big": "x" * 10000})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind


def test_cuda_oom_on_a_sample_is_recorded_and_the_run_continues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from methods.vanilla import Vanilla

    real = Vanilla.generate
    calls = {"n": 0}

    def flaky(self, adapter, inputs, gen, seeds):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, adapter, inputs, gen, seeds)

    monkeypatch.setattr(Vanilla, "generate", flaky)
    res = run(compose([*FAST, results_override(tmp_path), "runtime.limit=3"]))
    assert res["n_errors"] == 1 and res["n_done"] == 3
    assert next(iter(res["errors"].values())).startswith("CUDA out of memory")
    calls["n"] = 0
    with pytest.raises(torch.cuda.OutOfMemoryError):
        run(compose([*FAST, results_override(tmp_path / "raise"), "runtime.limit=3", "runtime.on_oom=raise"]))


def test_torchrun_rank_picks_its_own_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from vh_bench.config import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device(compose([]).runtime) == ("cuda:3", "float16")
    monkeypatch.delenv("LOCAL_RANK")
    assert resolve_device(compose([]).runtime) == ("cuda", "float16")
