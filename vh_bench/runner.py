"""compose → validate → build → generate (one line per sample) → score → results.json.

Data flows one way (design.md): the runner hands each dataset `Sample` to the adapter, the prepared
inputs to the method, the method's `Generation` to a sample line, and the lines to the dataset's
scorer. Everything that changes outputs is fingerprinted into the run directory's name, so the
same command continues the same directory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from vh_bench import devices
from vh_bench.checks import check_inside, check_path_part
from vh_bench.config import gen_config, resolve_device, results_dir, to_plain
from vh_bench.data.base import Dataset, select_samples, selection_digest
from vh_bench.data.images import load_rgb
from vh_bench.decoding.kv_cache import KVBytes
from vh_bench.decoding.method import Method
from vh_bench.decoding.seeding import SampleSeeds
from vh_bench.errors import ConfigError, RunError, SampleError, ScoringError
from vh_bench.metrics.speed import speed_from_rows
from vh_bench.models import registry
from vh_bench.models.adapter import Adapter, ModelInputs
from vh_bench.models.llava import DTYPES, check_checkpoint
from vh_bench.models.weights import check_weights_sha256
from vh_bench.models.templates import resolve_template
from vh_bench.preflight import check_model, check_runtime
from vh_bench.preflight import shard_of as preflight_shard_of
from vh_bench.provenance import device_description, git_commit, library_versions
from vh_bench.records import GenConfig, Sample
from vh_bench.scoring_worker import ScoringWorker
from vh_bench.store import RunStore, atomic_write_json, atomic_write_text, fingerprint

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """Everything decided before any model is loaded."""

    cfg: DictConfig
    gen: GenConfig
    method: Method
    dataset: Dataset
    device: str
    dtype: str
    fingerprint: str
    run_dir: Path
    shard_index: int
    shard_count: int


def _instantiate(node: DictConfig, key: str) -> Any:
    """Build config group `key` (its node `node`) with Hydra; a failure is one ConfigError line."""
    try:
        return instantiate(node, _convert_="all")
    except Exception as exc:  # noqa: BLE001 - Hydra wraps TypeErrors of unknown keys
        cause = exc.__cause__ or exc
        raise ConfigError(key, f"cannot build {node.get('_target_')}: {cause}".splitlines()[0]) from exc


def build_method(cfg: DictConfig) -> Method:
    if "_target_" not in cfg.method:
        raise ConfigError("method", "has no _target_", "every configs/method/*.yaml names its class")
    method = _instantiate(cfg.method, "method")
    if not isinstance(method, Method):
        raise ConfigError("method._target_", f"{cfg.method._target_} is not a vh_bench Method")
    return method


def build_dataset(cfg: DictConfig) -> Dataset:
    return _instantiate(cfg.dataset, "dataset")


def model_identity(cfg: DictConfig) -> dict[str, Any]:
    m = cfg.model
    ident = {
        "name": m.name,
        # Absent for LLaVA so that the run directories of configs written before families keep their ids.
        **({"family": str(m.family)} if m.get("family") not in (None, "llava") else {}),
        "path": m.path if m.tiny is None else None,
        "tiny": to_plain(m.tiny),
        "prompt_template": resolve_template(str(m.prompt_template)),
    }
    if m.get("sha256"):  # a shipped checkpoint's weights (model=scenes): a retrained one gets new runs
        ident["sha256"] = str(m.sha256)
    ident.update(registry.load_options(registry.family(m.get("family")), m))  # e.g. Qwen's pixel limits
    return ident


def resolve_model_path(cfg: DictConfig) -> str:
    """The checkpoint to load: the configured path, or the random model built from `model.tiny`."""
    if cfg.model.tiny is not None:
        fam = registry.family(cfg.model.get("family"))
        try:
            return str(fam.build_tiny(to_plain(cfg.model.tiny), Path(str(cfg.paths.cache_dir)) / "models"))
        except TypeError as exc:  # an unknown or missing spec key
            raise ConfigError("model.tiny", str(exc)) from exc
    if not cfg.model.path:
        raise ConfigError("model.path", "is empty", "a hub id such as llava-hf/llava-1.5-7b-hf or a local directory")
    return str(cfg.model.path)


def set_num_threads(runtime: DictConfig) -> None:
    """`runtime.num_threads` torch CPU threads, if set (else torch's default)."""
    if runtime.num_threads:
        torch.set_num_threads(int(runtime.num_threads))


def load_adapter(cfg: DictConfig, model_path: str, device: str, dtype: str) -> Adapter:
    """The `model.family` adapter over `model_path` as the config asks (attention backend, prompt
    template, name): the runner's and the benches' one way to load the model."""
    fam = registry.family(cfg.model.get("family"))
    return fam.adapter_class().load(
        model_path,
        dtype=dtype,
        device=device,
        attn_implementation=str(cfg.runtime.attn_backend),
        prompt_template=str(cfg.model.prompt_template),
        name=str(cfg.model.name),
        **registry.load_options(fam, cfg.model),
    )


def shard_of(cfg: DictConfig) -> tuple[int, int]:
    """Shard from config, else from torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    return preflight_shard_of(cfg.runtime)


def in_shard(sample_id: str, index: int, count: int) -> bool:
    # By hash of the id, not by position: a sample belongs to the same shard whatever is already done.
    h = int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")
    return h % count == index


def plan(cfg: DictConfig) -> Plan:
    """Validate everything that can be validated without loading a model."""
    runtime = cfg.runtime
    check_runtime(runtime)  # the torch-free checks (__main__ ran them before importing torch)
    check_model(cfg.model)
    check_path_part("model.name", cfg.model.name)
    method = build_method(cfg)
    dataset = build_dataset(cfg)
    check_path_part("dataset.name", dataset.name)
    gen = gen_config(cfg, getattr(dataset, "max_new_tokens", None))
    method.check(gen)
    device, dtype = resolve_device(runtime)
    if dtype not in DTYPES:
        raise ConfigError("runtime.dtype", f"{dtype!r} is not one of {sorted(DTYPES)} or auto")
    method.check_runtime(device, DTYPES[dtype])
    fam = registry.family(cfg.model.get("family"))
    refusal = fam.adapter_class().refuse(method)
    if refusal:
        raise ConfigError("method", f"{type(method).__name__} cannot run on model.family={fam.name}: {refusal}")
    if cfg.model.tiny is None:
        check_checkpoint(str(cfg.model.path), fam.model_types, fam.example_hub_id)
        if cfg.model.get("sha256"):
            check_weights_sha256(str(cfg.model.path), str(cfg.model.sha256))
    dataset.check()
    identity = {
        "model": model_identity(cfg),
        "method": method.fingerprint(),
        "dataset": dataset.identity(),  # what selects the samples and prompts, not where files live
        "generation": gen.__dict__,
        "seed": int(runtime.seed),
        "dtype": dtype,
        "attn_backend": runtime.attn_backend,
    }
    fp = fingerprint(identity)
    run_dir = results_dir(cfg) / "runs" / str(cfg.model.name) / dataset.name / method.name / fp[:8]
    check_inside(run_dir, results_dir(cfg), "paths.results_dir")
    index, count = shard_of(cfg)
    return Plan(cfg, gen, method, dataset, device, dtype, fp, run_dir, index, count)


def line_check(samples: list[Sample]) -> Callable[[dict[str, Any]], str | None]:
    """A sample line belongs to its sample only if it carries the sample's own fields (image_id,
    question_id, label): anything else is a corrupt or foreign line, set aside and redone."""
    expected = {s.sample_id: json.loads(json.dumps(s.meta, default=str)) for s in samples}

    def problem(row: dict[str, Any]) -> str | None:
        meta = expected.get(row["sample_id"])
        for key, value in (meta or {}).items():
            if row.get(key) != value:
                return f"its {key} {row.get(key)!r} is not {value!r} of sample {row['sample_id']}"
        return None

    return problem


def _sample_line(
    sample: Sample, gen_out: Any, *, device: str, warmup: bool, error: str | None, speed_env: dict[str, Any] | None = None
) -> dict[str, Any]:
    row: dict[str, Any] = {**sample.meta, "sample_id": sample.sample_id, "error": error, "warmup": warmup, "device": device}
    if speed_env is not None:
        row["speed_env"] = speed_env
    if gen_out is None:
        row.update(text="", token_ids=[], n_new_tokens=0, t_prefill_s=0.0, t_decode_s=0.0)
    else:
        row.update(
            text=gen_out.text,
            token_ids=gen_out.token_ids,
            n_new_tokens=gen_out.n_new_tokens,
            t_prefill_s=gen_out.t_prefill_s,
            t_decode_s=gen_out.t_decode_s,
        )
        if gen_out.n_image_tokens is not None:
            row["n_image_tokens"] = gen_out.n_image_tokens
        if gen_out.extras:
            row["extras"] = gen_out.extras
    return row


def timing_environment(device: str, dtype: str, attn_backend: str) -> dict[str, Any]:
    """What a sample's timings depend on besides the method (metrics.md §5). Written on every line:
    a run resumed under a different one mixes timings that do not belong together."""
    desc = device_description(device)
    versions = library_versions()
    return {
        "device": desc.get("gpu") or f"{device}:{desc['cpu']}",
        "dtype": dtype,
        "attn_backend": attn_backend,
        "torch_threads": desc["torch_threads"],
        "batch_size": 1,
        "torch": versions.get("torch"),
        "transformers": versions.get("transformers"),
    }


def shard_label(p: Plan) -> str:
    """This process's samples file: `samples.jsonl`, or `samples.<i>-of-<n>.jsonl` for a shard."""
    return f"{p.shard_index}-of-{p.shard_count}" if p.shard_count > 1 else ""


def generate_samples(p: Plan, store: RunStore, samples: list[Sample]) -> dict[str, Any]:
    """Generate every selected sample of this shard that has no line yet. Returns run facts."""
    done = store.done_ids()
    todo = [s for s in samples if s.sample_id not in done and in_shard(s.sample_id, p.shard_index, p.shard_count)]
    facts: dict[str, Any] = {"n_generated_now": len(todo), "n_already_done": len(done)}
    if not todo:
        return facts
    rt = p.cfg.runtime
    set_num_threads(rt)
    model_path = resolve_model_path(p.cfg)
    devices.bind(p.device)  # torchrun: this rank's GPU becomes the current one
    t0 = time.perf_counter()
    adapter = load_adapter(p.cfg, model_path, p.device, p.dtype)
    facts["model_load_s"] = time.perf_counter() - t0
    facts["model_path"] = model_path
    if devices.is_cuda(p.device):
        facts["weights_bytes"] = devices.allocated_bytes(p.device)
    kv_peak = KVBytes(0, 0)
    shard = shard_label(p)
    warmup_left = int(rt.warmup_samples)
    speed_env = timing_environment(p.device, p.dtype, str(rt.attn_backend))
    with store.open_samples(shard) as writer:
        bar = tqdm(todo, desc=f"{p.method.name} on {p.dataset.name}", unit="sample", disable=not rt.progress, file=sys.stderr)
        # The next sample's image is decoded and preprocessed on a worker thread while the model
        # generates the current one (errors surface, per sample, when its inputs are taken).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vh_bench-prefetch") as pool:
            upcoming = [pool.submit(prepare_inputs, adapter, todo[0])]
            for i, sample in enumerate(bar):
                if i + 1 < len(todo):
                    upcoming.append(pool.submit(prepare_inputs, adapter, todo[i + 1]))
                error, out = _generate_one(p, adapter, sample, upcoming.pop(0))
                if error:
                    log.warning("%s: %s", sample.sample_id, error)
                warm = error is None and warmup_left > 0
                if warm:
                    warmup_left -= 1
                    devices.reset_peak(p.device)
                elif out is not None and out.kv_cache is not None:
                    kv_peak = KVBytes(*(max(a, b) for a, b in zip(astuple(kv_peak), astuple(out.kv_cache))))
                writer.write(_sample_line(sample, out, device=p.device, warmup=warm, error=error, speed_env=speed_env))
    # The KV caches' used bytes and their reserved capacity apart: the spare capacity (up to 2×,
    # kv_cache.GrowingLayer) is inside the allocator's peak but is not memory the method needs.
    facts["memory"] = {**devices.peak_memory(p.device), "kv_cache_used_bytes": kv_peak.used_bytes,
                       "kv_cache_reserved_bytes": kv_peak.reserved_bytes}  # fmt: skip
    return facts


def prepare_inputs(adapter: Adapter, sample: Sample) -> ModelInputs:
    """A sample's model inputs: its image loaded and processed with its prompt."""
    return adapter.prepare(load_rgb(sample.image_path), sample.prompt)


def _generate_one(p: Plan, adapter: Adapter, sample: Sample, inputs: Future) -> tuple[str | None, Any]:
    """One sample: (error, generation). Per-sample failures are returned, not raised."""
    rt = p.cfg.runtime
    error, out = None, None
    try:
        ins = inputs.result()
        out = p.method.generate(adapter, ins, p.gen, SampleSeeds(int(rt.seed), sample.sample_id))
        # Per sample: LLaVA-NeXT's and Qwen2.5-VL's counts depend on the image's size.
        out.n_image_tokens = ins.n_image_tokens
    except SampleError as exc:
        error = str(exc)
    except torch.cuda.OutOfMemoryError as exc:
        if rt.on_oom == "raise":
            raise
        torch.cuda.empty_cache()
        error = f"CUDA out of memory: {str(exc).splitlines()[0]}"
    return error, out


def visual_token_counts(rows: list[dict[str, Any]]) -> dict[str, float] | None:
    """Min / mean / max visual tokens per prompt over the generated samples (None: not recorded)."""
    counts = [int(r["n_image_tokens"]) for r in rows if not r.get("error") and r.get("n_image_tokens") is not None]
    if not counts:
        return None
    return {"min": min(counts), "mean": round(sum(counts) / len(counts), 2), "max": max(counts)}


def score(
    p: Plan, store: RunStore, samples: list[Sample], facts: dict[str, Any], scorer: ScoringWorker | None = None
) -> dict[str, Any]:
    # Shards finishing at once score one after the other, each reading every line written so far.
    with store.results_lock():
        return _score_locked(p, store, samples, facts, scorer)


def _score_locked(
    p: Plan, store: RunStore, samples: list[Sample], facts: dict[str, Any], scorer: ScoringWorker | None
) -> dict[str, Any]:
    wanted = {s.sample_id for s in samples}
    # In sample-id order: shard files interleave lines by finishing time, and the bootstrap draws
    # over the rows' order, so a sharded or resumed run must see the rows an uninterrupted one sees.
    rows = sorted((r for r in store.rows() if r["sample_id"] in wanted), key=lambda r: r["sample_id"])
    complete = len(rows) == len(wanted)
    try:
        if not rows:
            metrics = {}
        elif scorer is not None:
            metrics = scorer.score(rows, wanted)
        else:
            metrics = p.dataset.score(rows, selected=wanted)
    except (ValueError, OSError, KeyError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ScoringError(
            f"scoring {p.dataset.name} failed: {msg} (the {len(rows)} sample lines in {p.run_dir} are kept; "
            "fix the input and re-run the same command to rescore)"
        ) from exc
    cfg = p.cfg
    results = {
        "fingerprint": p.fingerprint,
        "run_dir": str(p.run_dir),
        "model": str(cfg.model.name),
        "model_family": registry.family(cfg.model.get("family")).name,
        "visual_tokens": visual_token_counts(rows),
        "dataset": p.dataset.name,
        "task": p.dataset.task,
        "method": p.method.name,
        "method_label": getattr(p.method, "label", p.method.name),
        "hyperparameters": p.method.hyperparameters(),
        # what a setting such as `auto` resolved to in this process (e.g. VASparse's kernel)
        "implementation": getattr(p.method, "implementation", dict)(),
        "generation": p.gen.__dict__,
        "prompt_template": resolve_template(str(cfg.model.prompt_template)),
        "seed": int(cfg.runtime.seed),
        "dtype": p.dtype,
        "attention": {"text": "vh_attn", "plain_kernel": str(cfg.runtime.attn_backend), "vision": "sdpa"},
        "n_samples": len(wanted),
        # Which samples the run asked for, so the report never puts runs over different ones in one column.
        "sample_set": hashlib.sha256("\n".join(sorted(wanted)).encode()).hexdigest()[:16],
        "limit": None if cfg.runtime.limit is None else int(cfg.runtime.limit),
        "selection": selection_digest(wanted),  # what `score run` checks it rescores the same samples
        "n_done": len(rows),
        "n_errors": sum(1 for r in rows if r.get("error")),
        "errors": {r["sample_id"]: r["error"] for r in rows if r.get("error")},
        "complete": complete,
        "metrics": metrics,
        "speed": speed_from_rows(rows),
        "run": facts,
        "data": p.dataset.provenance(),
        "device": device_description(p.device),
        "versions": library_versions(),
        "git": git_commit(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    # A `runtime.limit` run or a shard that saw fewer lines never replaces a fuller results.json.
    target = store.results_target(results, cfg.runtime.limit)
    results["results_file"] = None if target is None else target.name
    if target is not None:
        atomic_write_json(target, results)
    return results


# errnos that mean "this run directory cannot be written", not a bug: one line, resume later.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}


def run(cfg: DictConfig) -> dict[str, Any]:
    p = plan(cfg)
    try:
        store = RunStore(p.run_dir)
        # One process per samples file: a second identical run is refused with one line.
        store.lock_samples(shard_label(p))
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise RunError(f"cannot write the run directory {p.run_dir}: {exc.strerror}") from None
        raise
    try:
        return _run_locked(p, store)
    finally:
        store.release()


def _run_locked(p: Plan, store: RunStore) -> dict[str, Any]:
    cfg = p.cfg
    manifest = {
        "status": "running",
        "fingerprint": p.fingerprint,
        "argv": sys.argv,
        "versions": library_versions(),
        "git": git_commit(),
        "device": p.device,
        "shard": [p.shard_index, p.shard_count],
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    samples = select_samples(p.dataset, p.cfg.runtime.limit)
    store.accept = line_check(samples)
    try:
        atomic_write_text(p.run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        atomic_write_json(p.run_dir / "manifest.json", manifest)
        log.info("run directory %s (%d samples)", p.run_dir, len(samples))
        dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
        with ScoringWorker(p.dataset, dataset_cfg, enabled=bool(cfg.runtime.scoring_worker)) as scorer:
            facts = generate_samples(p, store, samples)
            results = score(p, store, samples, facts, scorer)
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            _mark_failed(p.run_dir, manifest, f"{type(exc).__name__}: {exc}")
            raise
        problem = f"cannot write {exc.filename or p.run_dir}: {exc.strerror}"
        _mark_failed(p.run_dir, manifest, problem)
        n = len(store.rows())
        raise RunError(
            f"{problem}; the {n} sample lines in {p.run_dir} are kept (free space or fix permissions, "
            "then re-run the same command to resume)"
        ) from None
    except BaseException as exc:
        _mark_failed(p.run_dir, manifest, (str(exc).strip().splitlines() or [type(exc).__name__])[0])
        raise
    # The manifest speaks for results.json, which a limited run or a stale shard leaves in place.
    kept = store.read_results() or results
    manifest["status"] = "complete" if kept.get("complete") else "partial"
    manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest["results_file"] = results["results_file"]
    atomic_write_json(p.run_dir / "manifest.json", manifest)
    return results


def _mark_failed(run_dir: Path, manifest: dict[str, Any], error: str) -> None:
    """Record the failure in manifest.json. On a full disk the atomic write (a new file) fails,
    so the old manifest is rewritten in place, which needs no new blocks."""
    body = json.dumps({**manifest, "status": "failed", "error": error}, indent=2, sort_keys=True, default=str) + "\n"
    path = run_dir / "manifest.json"
    try:
        atomic_write_text(path, body)
        return
    except OSError:
        pass
    try:
        with path.open("r+", encoding="utf-8") as fh:
            fh.write(body)
            fh.truncate()
    except OSError as exc:
        log.error("could not record the failure in %s: %s", path, exc)
