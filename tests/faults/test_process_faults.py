"""Faults that need real processes (few, and kept short): a SIGKILLed run leaves no orphaned
scoring worker and no stale lock; a second identical run is refused while the first lives; user
errors on the command line are one line, no traceback, nothing written outside paths.results_dir."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import FAST, results_override, run_cli
from tests.faults.conftest import quick_cfg
from vh_bench.errors import RunError
from vh_bench.paths import project_root
from vh_bench.runner import plan, run
from vh_bench.store import RunLock, RunStore

# Slow enough per sample that the test can act between lines (336 px, 48 tokens), with the
# scoring worker on, as a real run has it.
SLOW = ("runtime.limit=12", "generation.max_new_tokens=48", "model.tiny.image_size=336", "runtime.scoring_worker=true")


def _children(pid: int) -> set[int]:
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _lines(run_dir: Path) -> int:
    return sum(len(f.read_bytes().split(b"\n")) - 1 for f in run_dir.glob("samples*.jsonl"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find the worker")
def test_sigkill_leaves_no_orphan_and_no_stale_lock_and_a_second_run_is_refused(tmp_path: Path) -> None:
    results = tmp_path / "results"
    run_dir = plan(quick_cfg(results, *SLOW)).run_dir
    cmd = [sys.executable, "-m", "vh_bench", *FAST, results_override(results), *SLOW]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(cmd, cwd=project_root(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and not (run_dir.is_dir() and _lines(run_dir) >= 1):
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before the test could act"
        children = _children(proc.pid)
        assert children, "the scoring worker was not started"
        # While the first lives, the same command is refused in one line, before generating.
        with pytest.raises(RunError, match=r"^another vh_bench process \(pid %d on " % proc.pid):
            run(quick_cfg(results, *SLOW))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    n_lines = _lines(run_dir)
    assert 1 <= n_lines < 12 and not (run_dir / "results.json").exists()
    # The worker (and the resource tracker) notice their parent is gone and exit by themselves.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(_alive(c) for c in children):
        time.sleep(0.1)
    assert not [c for c in children if _alive(c)], "orphaned children of the killed run"
    # The kernel dropped the dead process's lock: the same command may resume at once.
    store = RunStore(run_dir)
    store.lock_samples()
    store.release()


def test_cli_run_held_by_another_process_is_one_line_and_writes_nothing_outside_results(tmp_path: Path) -> None:
    # ConfigError's one-line path is tested in test_runner.py; this is RunError's, through __main__.
    results = tmp_path / "out" / "results"
    run_dir = plan(quick_cfg(results, "runtime.limit=1")).run_dir
    run_dir.mkdir(parents=True)
    lock = RunLock(run_dir / ".samples.jsonl.lock")
    assert lock.acquire(blocking=False)
    lock.note("pid 1 on test since now")
    try:
        res = run_cli([*FAST, results_override(results), "runtime.limit=1"])
    finally:
        lock.release()
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"vh_bench: error: another vh_bench process (pid 1 on test since now) is running this run in {run_dir}; "
        "wait for it to finish, or run another runtime.shard.index"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and [p.name for p in (tmp_path / "out").iterdir()] == ["results"]
    assert not (run_dir / "samples.jsonl").exists() and not (run_dir / "manifest.json").exists()
