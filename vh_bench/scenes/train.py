"""Staged training of the scenes model, resumable, with fixed step counts.

Stage 0 pre-trains the vision tower alone to label each patch with the class covering it (LLaVA
starts from a pre-trained CLIP; ours is pre-trained here, on the cheapest dense signal). Stage 1 trains the language model alone on text-only captions of imagined scenes whose planted
pairs co-occur almost always (`text_stage.p_partner`): the language prior. Stage 2 trains every
weight on drawn scenes whose pairs co-occur less often (`scenes.p_partner`), with the language
model at a lower learning rate, and (every `text_every` steps) a text-only batch with the strong
prior, as LLaVA-1.5 mixes text-only data into its tuning. The image then carries evidence that the
prior can override or not; the premise check measures which.

Everything needed to continue sits in `run_dir/state.pt` (weights, optimiser, step); a killed run
resumes from its last checkpoint. `run_dir/log.jsonl` holds the losses and validation scores.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from vh_bench.scenes.model import ScenesModelSpec, new_model

log = logging.getLogger(__name__)


def _abs(path: str) -> Path:
    from vh_bench.paths import project_root

    p = Path(path)
    return p if p.is_absolute() else project_root() / p


class _Batches(torch.utils.data.IterableDataset):
    """Collated batches from an endless example stream (built inside the loader's worker);
    batch 0 means the stream yields whole batches itself."""

    def __init__(self, make_stream, batch: int, pad_id: int) -> None:
        self.make_stream, self.batch, self.pad_id = make_stream, batch, pad_id

    def __iter__(self):
        from vh_bench.scenes.examples import collate

        stream = self.make_stream()
        while True:
            yield next(stream) if self.batch == 0 else collate([next(stream) for _ in range(self.batch)], self.pad_id)


def _loader(make_stream, batch: int, pad_id: int):
    # One worker process draws and encodes the next batches while the main thread trains.
    return iter(torch.utils.data.DataLoader(_Batches(make_stream, batch, pad_id), batch_size=None,
                                            num_workers=1, prefetch_factor=4, persistent_workers=False))


def _vision_head(model) -> torch.nn.Linear:
    from vh_bench.scenes.catalogue import NAMES

    torch.manual_seed(0)
    return torch.nn.Linear(model.config.vision_config.hidden_size, len(NAMES) + 1)


def _vision_loss(model, head: torch.nn.Linear, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Patch labelling on the layer LLaVA reads (vision_feature_layer), CLS token dropped."""
    out = model.model.vision_tower(batch["pixel_values"], output_hidden_states=True)
    feats = out.hidden_states[model.config.vision_feature_layer][:, 1:]
    return torch.nn.functional.cross_entropy(head(feats).flatten(0, 1), batch["patch_labels"].flatten())


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10 %."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _language_params(model) -> list[torch.nn.Parameter]:
    return list(model.model.language_model.parameters()) + list(model.lm_head.parameters())


def _optimizer(model, stage: str, cfg: dict, head: torch.nn.Module | None = None) -> torch.optim.Optimizer:
    if stage == "vision":
        params = list(model.model.vision_tower.parameters()) + list(head.parameters())
        return torch.optim.AdamW(params, lr=cfg["vision_stage"]["lr"], weight_decay=0.01)
    if stage == "text":
        return torch.optim.AdamW(_language_params(model), lr=cfg["text_stage"]["lr"], weight_decay=0.01)
    lm = {id(p) for p in _language_params(model)}
    # LLaVA keeps its pre-trained vision tower frozen while it tunes; so do we by default.
    train_vision = bool(cfg["image_stage"].get("train_vision", False))
    model.model.vision_tower.requires_grad_(train_vision)
    frozen = set() if train_vision else {id(p) for p in model.model.vision_tower.parameters()}
    rest = [p for p in model.parameters() if id(p) not in lm and id(p) not in frozen]
    lr = cfg["image_stage"]["lr"]
    return torch.optim.AdamW(
        [{"params": rest, "lr": lr, "base": lr},
         {"params": _language_params(model), "lr": lr * cfg["image_stage"]["lm_lr_scale"],
          "base": lr * cfg["image_stage"]["lm_lr_scale"]}],
        weight_decay=0.01,
    )


def _save_state(path: Path, model, opt, stage: str, step: int, elapsed: float, head=None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "stage": stage, "step": step,
                "elapsed": elapsed, "head": None if head is None else head.state_dict()}, tmp)
    os.replace(tmp, path)  # atomic: a kill during the write keeps the previous checkpoint


def _append(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()


def run(cfg: dict[str, Any], argv: list[str] | None = None) -> Path:
    """Train (or resume) per `cfg` (configs/scenes/train.yaml); export the final checkpoint."""
    from tqdm import tqdm

    from vh_bench.scenes import quick_eval
    from vh_bench.scenes.examples import Encoder, image_examples, text_examples, vision_batches
    from vh_bench.scenes.splits import ScenesConfig, probe_partners, split_scenes

    torch.set_num_threads(int(cfg["threads"]))
    run_dir = _abs(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg, indent=1))
    spec = ScenesModelSpec(seed=int(cfg["seed"]), **cfg["model"])
    scenes_cfg = ScenesConfig(**cfg["scenes"])
    torch.manual_seed(int(cfg["seed"]))
    model, processor = new_model(spec)
    encoder = Encoder(processor)
    pad = processor.tokenizer.pad_token_id
    state_path, log_path = run_dir / "state.pt", run_dir / "log.jsonl"

    stage, step, elapsed = ("vision" if cfg["vision_stage"]["steps"] else "text"), 0, 0.0
    head = _vision_head(model)
    if state_path.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        if state.get("head") is not None:
            head.load_state_dict(state["head"])
        stage, step, elapsed = state["stage"], state["step"], state["elapsed"]
        log.info("resuming the %s stage at step %d", stage, step)
    opt = _optimizer(model, stage, cfg, head)
    if state_path.is_file():
        opt.load_state_dict(state["opt"])

    n_eval = int(cfg["eval_scenes"])
    val_test = split_scenes(scenes_cfg, "val_test")[:n_eval]
    val_probe = split_scenes(scenes_cfg, "val_probe")[:n_eval]
    partners = probe_partners(scenes_cfg, "val_probe")
    seed = int(cfg["seed"])
    t0 = time.perf_counter() - elapsed

    def evaluate(at: int) -> None:
        tc = quick_eval.captions(model, encoder, val_test)
        pc = quick_eval.captions(model, encoder, val_probe)
        s = quick_eval.score(val_test, tc, val_probe, pc, partners)
        _append(log_path, {"kind": "eval", "stage": stage, "step": at, **asdict(s), "example": tc[0]})
        log.info("step %d %s: %s | %s", at, stage, s, tc[0])

    vs, ts, ims = cfg["vision_stage"], cfg["text_stage"], cfg["image_stage"]
    if stage == "vision":
        batches = _loader(lambda: vision_batches(encoder, scenes_cfg, scenes_cfg.p_partner, seed * 1000 + 3 + step,
                                                 vs["batch"]), 0, pad)
        bar = tqdm(range(step, vs["steps"]), desc="stage 0 (vision tower)", initial=step, total=vs["steps"])
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = vs["lr"] * _lr_factor(step, vs["steps"], 100)
            loss = _vision_loss(model, head, next(batches))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % 20 == 0:
                _append(log_path, {"kind": "loss", "stage": "vision", "step": step, "loss": loss.item()})
            if (step + 1) % cfg["checkpoint_every"] == 0:
                _save_state(state_path, model, opt, "vision", step + 1, time.perf_counter() - t0, head)
        stage, step = "text", 0
        opt = _optimizer(model, stage, cfg)
        _save_state(state_path, model, opt, stage, step, time.perf_counter() - t0)
    if stage == "text":
        # Stream seeds carry the start step, so a resumed run draws new (not repeated) examples.
        batches = _loader(lambda: text_examples(encoder, scenes_cfg, ts["p_partner"], seed * 1000 + step),
                          ts["batch"], pad)
        bar = tqdm(range(step, ts["steps"]), desc="stage 1 (text prior)", initial=step, total=ts["steps"])
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = ts["lr"] * _lr_factor(step, ts["steps"], 100)
            loss = model(**next(batches)).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % 20 == 0:
                _append(log_path, {"kind": "loss", "stage": "text", "step": step, "loss": loss.item()})
            if (step + 1) % cfg["checkpoint_every"] == 0:
                _save_state(state_path, model, opt, "text", step + 1, time.perf_counter() - t0)
        stage, step = "image", 0
        opt = _optimizer(model, stage, cfg)
        _save_state(state_path, model, opt, stage, step, time.perf_counter() - t0)
        evaluate(0)

    if step < ims["steps"]:
        def rate(at: int) -> float:
            return float(ims["absent_partner_rate"]) if at >= int(ims["absent_partner_from"]) else 0.0

        def image_loader(at: int):
            return _loader(lambda: image_examples(encoder, scenes_cfg, scenes_cfg.p_partner, seed * 1000 + 1 + at,
                                                  ims["qa_fraction"], rate(at)), ims["batch"], pad)

        images = image_loader(step)
        texts = _loader(lambda: text_examples(encoder, scenes_cfg, ts["p_partner"], seed * 1000 + 2 + step),
                        ims["text_batch"], pad) if ims["text_every"] else None
        bar = tqdm(range(step, ims["steps"]), desc="stage 2 (images)", initial=step, total=ims["steps"])
        for step in bar:
            if step > 0 and rate(step) != rate(step - 1):
                images = image_loader(step)  # the captions' absent-partner rate starts here
            f = _lr_factor(step, ims["steps"], ims["warmup"])
            for g in opt.param_groups:
                g["lr"] = g["base"] * f
            use_text = texts is not None and step % ims["text_every"] == ims["text_every"] - 1
            loss = model(**next(texts if use_text else images)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % 20 == 0 or (use_text and step % 20 == ims["text_every"] - 1):
                _append(log_path, {"kind": "loss", "stage": "text_mix" if use_text else "image", "step": step,
                                   "loss": loss.item()})
            if (step + 1) % cfg["checkpoint_every"] == 0:
                _save_state(state_path, model, opt, "image", step + 1, time.perf_counter() - t0)
            if (step + 1) % cfg["eval_every"] == 0:
                evaluate(step + 1)
        _save_state(state_path, model, opt, "image", ims["steps"], time.perf_counter() - t0)

    wall = time.perf_counter() - t0
    return export(model, processor, cfg, spec, scenes_cfg, wall, argv)


def export(model, processor, cfg: dict, spec: ScenesModelSpec, scenes_cfg, wall_s: float,
           argv: list[str] | None) -> Path:
    """Write the checkpoint (safetensors + processor) and `training.json` (how it was made)."""
    from vh_bench.models.tiny import save_checkpoint
    from vh_bench.store import file_sha256

    target = _abs(cfg["export_dir"])
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    model.eval()
    save_checkpoint(target, model, processor, {"scenes_model": asdict(spec), "scenes": asdict(scenes_cfg)})
    record = {
        "command": "python -m vh_bench.scenes train " + " ".join(shlex.quote(a) for a in (argv or [])),
        "config": cfg,
        "text_stage_steps": cfg["text_stage"]["steps"],
        "image_stage_steps": cfg["image_stage"]["steps"],
        "wall_time_s": round(wall_s, 1),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch": torch.__version__, "threads": int(cfg["threads"]),
                    "python": sys.version.split()[0]},
        "model_safetensors_sha256": file_sha256(target / "model.safetensors"),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    (target / "training.json").write_text(json.dumps(record, indent=1))
    log.info("exported %s (%s)", target, record["model_safetensors_sha256"][:12])
    return target
