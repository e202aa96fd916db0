"""`python -m vh_bench.bench profile [overrides...]`: where the wall time of one run goes.

Runs `vh_bench.runner.run` once, exactly as `python -m vh_bench` would (defaults: the demo
experiment on the bench model, vanilla), into a fresh temporary results directory so nothing is
resumed, with light wrappers around the harness's stages. Each stage's time is *exclusive*: time in
a nested stage (e.g. model forwards inside the decode loop) is counted there only, so the stages
add up to the run's wall time. The wrappers cost one `perf_counter` pair per call.
"""

from __future__ import annotations

import cProfile
import functools
import pstats
import shutil
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from vh_bench.bench.speed import with_defaults
from vh_bench import devices
from vh_bench.config import compose, override_key, record_overrides, resolve_device, results_dir
from vh_bench.report.layout import simple_markdown
from vh_bench.store import atomic_write_text

PROFILE_DEFAULTS = {"experiment": "demo", "model": "bench", "method": "vanilla", "runtime.progress": "false"}

# Stage → (category, description). Categories: `model` (forwards); `setup`, paid once per process
# whatever the run's size (model load, NLTK data); the harness's own work, either `per-sample`
# (grows with the number of samples) or `per-run` (once per run: planning, ground truth, writes).
STAGES: dict[str, tuple[str, str]] = {
    "forward.prefill": ("model", "model forward, prefill (vision tower + prompt)"),
    "forward.decode": ("model", "model forward, one token per step"),
    "model.load": ("setup", "model load (from_pretrained, to device)"),
    "model.build": ("setup", "random checkpoint lookup (built on first use only)"),
    "scoring.nltk": ("setup", "NLTK data checks + tagger/WordNet load (CHAIR, once per process)"),
    "data.image_load": ("per-sample", "image loading (PIL decode, RGB)"),
    "data.preprocess": ("per-sample", "image processing + tokenisation (processor)"),
    "decode.loop": ("per-sample", "decode loop outside forwards (token selection, timers, caches)"),
    "decode.detokenise": ("per-sample", "detokenisation"),
    "store.sample_lines": ("per-sample", "sample lines (JSON, flush, fsync)"),
    "data.listing": ("per-run", "dataset listing / demo data check"),
    "runner.samples": ("per-run", "sample loop bookkeeping (seeds, errors, progress)"),
    "store.results": ("per-run", "manifest / results.json / config writes"),
    "provenance": ("per-run", "provenance (git commit, library versions)"),
    "plan": ("per-run", "planning (build method + dataset, validate, fingerprint)"),
    "scoring.gt": ("per-run", "CHAIR ground truth (build or cached load)"),
    "scoring": ("per-run", "scoring proper (CHAIR words, OPOPE)"),
    "runner.other": ("per-run", "rest of run() (results assembly, speed aggregates)"),
}
HARNESS = ("per-sample", "per-run")


class Stages:
    """Exclusive wall time per stage, from wrappers that nest."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        # On CUDA, `sync` (torch.cuda.synchronize of the run's device) runs before each clock read:
        # kernels are asynchronous, and unsynchronised clocks would charge a stage's GPU work to
        # whichever later stage first waits for it.
        self.sync = sync
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        # Work on other threads (the runner's scoring warm-up) overlaps the main thread's wall time:
        # reported on its own, never added to the wall-time shares.
        self.background: dict[str, float] = defaultdict(float)
        self._local = threading.local()

    def _stack(self) -> list[list[Any]]:  # [stage, time spent in nested stages], per thread
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def wrap(self, stage: str | Callable[..., str], fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            name = stage(*args, **kwargs) if callable(stage) else stage
            stack = self._stack()
            sync = self.sync if threading.current_thread() is threading.main_thread() else None
            if sync is not None:
                sync()
            start = time.perf_counter()
            stack.append([name, 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                if sync is not None:
                    sync()
                elapsed = time.perf_counter() - start
                _, nested = stack.pop()
                if threading.current_thread() is threading.main_thread():
                    self.seconds[name] += elapsed - nested
                    self.calls[name] += 1
                else:
                    self.background[name] += elapsed - nested
                if stack:
                    stack[-1][1] += elapsed

        return timed


def _forward_stage(*args: Any, **kwargs: Any) -> str:
    prefill = kwargs.get("pixel_values") is not None or kwargs.get("inputs_embeds") is not None
    return "forward.prefill" if prefill else "forward.decode"


@contextmanager
def instrumented(stages: Stages) -> Iterator[None]:
    """Wrap the runner's stages for the duration of the block (restored afterwards)."""
    import vh_bench.runner as runner
    from vh_bench.models.llava import LlavaAdapter
    from vh_bench.scoring_worker import ScoringWorker
    from vh_bench.store import SampleWriter

    original_load = LlavaAdapter.load

    def load(cls: type, *args: Any, **kwargs: Any) -> Any:
        adapter = original_load(*args, **kwargs)
        # Instance attributes shadow the methods: every model call of every method passes here.
        adapter.model.forward = stages.wrap(_forward_stage, adapter.model.forward)
        adapter.prepare = stages.wrap("data.preprocess", adapter.prepare)
        adapter.decode_text = stages.wrap("decode.detokenise", adapter.decode_text)
        return adapter

    original_build_method = runner.build_method
    original_build_dataset = runner.build_dataset

    def build_method(cfg: Any) -> Any:
        method = original_build_method(cfg)
        method.generate = stages.wrap("decode.loop", method.generate)
        return method

    def build_dataset(cfg: Any) -> Any:
        ds = original_build_dataset(cfg)
        ds.score = stages.wrap("scoring", ds.score)
        ds.samples = stages.wrap("data.listing", ds.samples)
        ds.check = stages.wrap("data.listing", ds.check)
        return ds

    import vh_bench.metrics.chair as chair
    import vh_bench.nltk_env as nltk_env

    with ExitStack() as stack:
        patch = functools.partial(mock.patch.object, runner)
        # Looked up as module globals at call time, so patching the modules reaches every caller.
        stack.enter_context(mock.patch.object(nltk_env, "ensure_nltk", stages.wrap("scoring.nltk", nltk_env.ensure_nltk)))
        stack.enter_context(mock.patch.object(nltk_env, "_load_tagger", stages.wrap("scoring.nltk", nltk_env._load_tagger)))
        stack.enter_context(mock.patch.object(chair, "load_ground_truth", stages.wrap("scoring.gt", chair.load_ground_truth)))
        stack.enter_context(mock.patch.object(LlavaAdapter, "load", classmethod(stages.wrap("model.load", load))))
        stack.enter_context(patch("build_method", build_method))
        stack.enter_context(patch("build_dataset", build_dataset))
        stack.enter_context(patch("resolve_model_path", stages.wrap("model.build", runner.resolve_model_path)))
        stack.enter_context(patch("load_rgb", stages.wrap("data.image_load", runner.load_rgb)))
        stack.enter_context(patch("plan", stages.wrap("plan", runner.plan)))
        stack.enter_context(patch("generate_samples", stages.wrap("runner.samples", runner.generate_samples)))
        stack.enter_context(patch("atomic_write_json", stages.wrap("store.results", runner.atomic_write_json)))
        stack.enter_context(patch("atomic_write_text", stages.wrap("store.results", runner.atomic_write_text)))
        stack.enter_context(patch("git_commit", stages.wrap("provenance", runner.git_commit)))
        stack.enter_context(patch("library_versions", stages.wrap("provenance", runner.library_versions)))
        stack.enter_context(mock.patch.object(SampleWriter, "write", stages.wrap("store.sample_lines", SampleWriter.write)))
        # With the scoring worker, what the main process waits for at the end is this call.
        stack.enter_context(mock.patch.object(ScoringWorker, "score", stages.wrap("scoring", ScoringWorker.score)))
        yield


def breakdown(stages: Mapping[str, float], calls: Mapping[str, int], wall: float) -> dict[str, Any]:
    """Seconds and shares per stage and category.

    - `outside_forwards_share`: everything but model forwards over the wall time (the strict reading);
    - `harness_share_excl_setup`: the harness's work (per sample and per run) over the wall time
      without the one-off set-up (model load, NLTK data), which a process pays once;
    - `per_sample_share`: the harness's per-sample work over the time of the samples (forwards +
      that work): the share a long run tends to, once fixed costs are amortised.
    Time outside every wrapped stage (there should be next to none) counts as per-run harness.
    """
    cat: dict[str, float] = defaultdict(float)
    for name, sec in stages.items():
        cat[STAGES.get(name, ("per-run", name))[0]] += sec
    unaccounted = wall - sum(stages.values())
    cat["per-run"] += max(unaccounted, 0.0)
    harness = cat["per-sample"] + cat["per-run"]
    model, setup = cat["model"], cat["setup"]
    return {
        "wall_s": wall,
        "stages": {
            n: {"seconds": s, "calls": calls.get(n, 0), "share": s / wall if wall else None, "category": STAGES.get(n, ("per-run", n))[0]}
            for n, s in sorted(stages.items(), key=lambda kv: -kv[1])
        },
        "model_forward_s": model,
        "setup_s": setup,
        "harness_s": harness,
        "per_sample_s": cat["per-sample"],
        "per_run_s": cat["per-run"],
        "outside_forwards_share": (wall - model) / wall if wall else None,
        "harness_share_excl_setup": harness / (wall - setup) if wall > setup else None,
        "per_sample_share": cat["per-sample"] / (model + cat["per-sample"]) if model + cat["per-sample"] > 0 else None,
        "unaccounted_s": unaccounted,
    }


def _verdict(share: float | None, target: float = 0.02) -> str:
    return "meets" if share is not None and share <= target else "misses"


def profile_markdown(b: Mapping[str, Any], setup: Mapping[str, Any]) -> str:
    wall = b["wall_s"]
    rows = []
    for name, s in b["stages"].items():
        desc = STAGES.get(name, ("harness", name))[1]
        rows.append([desc, s["category"], s["calls"], f"{s['seconds']:.3f}", f"{100 * s['share']:.2f}"])
    if abs(b["unaccounted_s"]) > 5e-4:
        rows.append(["outside the wrapped stages", "harness", "", f"{b['unaccounted_s']:.3f}", f"{100 * b['unaccounted_s'] / wall:.2f}"])
    per_run, strict, per_sample = b["harness_share_excl_setup"], b["outside_forwards_share"], b["per_sample_share"]
    lines = [
        "# Where the wall time of one run goes",
        "",
        f"`python -m vh_bench.bench profile {' '.join(setup['overrides'])}` — {setup['description']}",
        f"Device {setup['device']}, {setup['threads']} torch threads; run() wall time {wall:.2f} s"
        f" (process start-up before it — imports, config composition — {setup['startup_s']:.2f} s, not included).",
        "",
        simple_markdown(["stage", "category", "calls", "seconds", "% of wall"], rows),
        "",
        f"- Model forwards: {b['model_forward_s']:.2f} s ({100 * b['model_forward_s'] / wall:.1f} % of wall).",
        f"- One-off set-up (model load, NLTK data; once per process whatever the run's size):"
        f" {b['setup_s']:.2f} s ({100 * b['setup_s'] / wall:.1f} %).",
        f"- Harness per-sample work (image loading and processing, decode-loop bookkeeping, sample lines):"
        f" {b['per_sample_s']:.3f} s = **{100 * per_sample:.2f} %** of the samples' time (forwards + this work)"
        f" — {_verdict(per_sample)} the ≤ 2 % target; what a long run tends to.",
        f"- Harness per-run work (planning, provenance, ground truth, scoring, writes): {b['per_run_s']:.3f} s."
        f" With the per-sample work: {100 * per_run:.2f} % of the wall time without the one-off set-up"
        f" — {_verdict(per_run)} the target.",
        f"- Everything outside model forwards, set-up included: {100 * strict:.2f} % of the wall time"
        f" — {_verdict(strict)} the target on a run of this size.",
        *(
            [
                "- Overlapped with generation on a worker thread (the next sample's image; not part"
                " of the wall-time shares above): "
                + ", ".join(f"{STAGES.get(k, ('', k))[1]} {v:.2f} s" for k, v in sorted(b["background"].items()))
                + ".",
            ]
            if b.get("background")
            else []
        ),
        "",
        "Stages are exclusive (a nested stage's time is counted only there) and measured with one"
        " perf_counter pair per call around the harness's own functions (vh_bench.bench.profile).",
    ]
    return "\n".join(lines)


def _device_text(desc: Mapping[str, Any]) -> str:
    return str(desc.get("gpu") or f"{desc.get('device')} ({desc.get('cpu')})")


def run_profile(
    overrides: Sequence[str] = (),
    *,
    out_dir: Path | None = None,
    cprofile: Path | None = None,
    keep: bool = False,
    started: float | None = None,
) -> dict[str, Any]:
    import torch

    import vh_bench.runner as runner
    from vh_bench.provenance import device_description

    ovs = with_defaults(overrides, PROFILE_DEFAULTS)
    base = compose(ovs)
    out = Path(out_dir) if out_dir is not None else results_dir(base) / "bench"
    out.mkdir(parents=True, exist_ok=True)
    given = {override_key(o) for o in overrides}
    tmp = None
    if "paths.results_dir" not in given:
        # A fresh directory: the same command would otherwise resume the finished run and time nothing.
        tmp = Path(tempfile.mkdtemp(prefix="profile-run-", dir=out))
        ovs = [*ovs, f"paths.results_dir={tmp}"]
    cfg = record_overrides(compose(ovs), ovs)  # generation.* given here beat a dataset's default
    device = resolve_device(cfg.runtime)[0]
    stages = Stages(sync=functools.partial(devices.synchronize, device) if devices.is_cuda(device) else None)
    prof = cProfile.Profile() if cprofile else None
    startup = time.perf_counter() - started if started is not None else 0.0
    try:
        with instrumented(stages):
            t0 = time.perf_counter()
            if prof:
                prof.enable()
            results = stages.wrap("runner.other", runner.run)(cfg)
            if prof:
                prof.disable()
            wall = time.perf_counter() - t0
    finally:
        if tmp is not None and not keep:
            shutil.rmtree(tmp, ignore_errors=True)
    b = breakdown(stages.seconds, stages.calls, wall)
    b["background"] = dict(stages.background)
    gen = results["generation"]
    speed = results.get("speed") or {}
    setup = {
        "overrides": list(overrides),
        "resolved_overrides": ovs,
        "description": (
            f"model `{results['model']}`, method `{results['method']}`, dataset `{results['dataset']}`"
            f" ({results['n_done']} samples), {gen['strategy']} ≤ {gen['max_new_tokens']} new tokens"
            f" (mean {speed.get('mean_new_tokens') or 0:.1f})."
        ),
        "device": _device_text(device_description(str((results.get("device") or {}).get("device", "cpu")))),
        "threads": torch.get_num_threads(),
        "startup_s": startup,
    }
    text = profile_markdown(b, setup)
    atomic_write_text(out / "profile.md", text + "\n")
    report: dict[str, Any] = {"setup": setup, "breakdown": b, "written": [str(out / "profile.md")]}
    if prof is not None and cprofile is not None:
        prof.dump_stats(str(cprofile))
        pstats.Stats(str(cprofile)).sort_stats("tottime").print_stats(25)
        report["written"].append(str(cprofile))
    report["markdown"] = text
    return report
