"""The premise of the scenes testbed, measured on the shipped checkpoint with vanilla greedy
decoding through the harness (`python -m vh_bench.scenes check [key=value ...]`).

1. It sees: recall and CHAIR_I on the in-distribution test split (the harness's CHAIR).
2. It hallucinates from the prior: planted rate P(names B | A, no B) on the probe split against
   the control rate P(names B | neither A nor B) on the control split, with 95 % bootstrap
   intervals.
3. The image holds evidence against it: p(B) at the position where B is produced (teacher-forced
   on the probe captions), with the probe image against the same scene drawn with B (the twin);
   also under VCD's noised image and with the image removed.

Writes `results/scenes/premise.json` and `premise.md` (or `out_dir=`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vh_bench.scenes.rates import Rate, bootstrap_mean, control_indicators, mentions, planted_indicators

log = logging.getLogger(__name__)

BASE = ("model=scenes", "method=vanilla", "generation=greedy", "runtime.device=cpu", "runtime.dtype=float32",
        "runtime.num_threads=1")


@dataclass
class SplitRun:
    results: dict[str, Any]
    rows: list[dict[str, Any]]  # sample lines, one per scene
    run_dir: Path


def run_split(split: str, overrides: list[str], num_images: int | None = None) -> SplitRun:
    """Caption one scenes split through the harness (a normal run directory; resumable)."""
    from vh_bench.config import compose
    from vh_bench.runner import plan, run
    from vh_bench.store import RunStore

    ov = [*BASE, "dataset=scenes", f"dataset.split={split}", *overrides]
    if num_images is not None:
        ov.append(f"dataset.num_images={num_images}")
    cfg = compose(ov)
    results = run(cfg)
    run_dir = plan(cfg).run_dir
    rows = sorted(RunStore(run_dir).rows(), key=lambda r: int(r["image_id"]))
    return SplitRun(results, rows, run_dir)


def texts(run: SplitRun) -> dict[int, str]:
    return {int(r["image_id"]): r["text"] for r in run.rows if not r.get("error")}


def scene_objects(dataset_dir: Path) -> dict[int, list[str]]:
    recs = [json.loads(line) for line in (dataset_dir / "scenes.jsonl").read_text().splitlines()]
    return {r["image_id"]: [o["name"] for o in r["objects"]] for r in recs}


# ---- teacher-forced probabilities -------------------------------------------------------------

class Forcer:
    """p(next token | prompt, image condition, prefix) on the harness's adapter."""

    def __init__(self, adapter, noise_step: int, seed: int = 0) -> None:
        from vh_bench.scenes.examples import Encoder

        self.adapter = adapter
        self.encoder = Encoder(adapter.processor)
        self.noise_step = noise_step
        self.seed = seed

    def pixels(self, image) -> torch.Tensor:
        return self.encoder.pixels(image).unsqueeze(0).to(self.adapter.dtype)

    @torch.no_grad()
    def prob(self, condition: str, image, prefix_ids: list[int], target_id: int) -> float:
        from methods.vcd import diffusion_noise
        from vh_bench.scenes.text import CAPTION_PROMPT

        with_image = condition != "no_image"
        ids = self.encoder.prompt_ids(CAPTION_PROMPT, with_image) + list(prefix_ids)
        input_ids = torch.tensor([ids])
        pv = None
        if with_image:
            pv = self.pixels(image)
            if condition == "vcd_noise":
                g = torch.Generator().manual_seed(self.seed)
                pv = diffusion_noise(pv, self.noise_step, g)
        out = self.adapter.model(input_ids=input_ids, pixel_values=pv, use_cache=False, logits_to_keep=1)
        return float(torch.softmax(out.logits[0, -1].float(), dim=-1)[target_id])


CONDITIONS = ("probe", "twin", "vcd_noise", "no_image")


def forced_probabilities(forcer: Forcer, probe_rows: list[dict], said: dict[int, set[str]],
                         partners: dict[int, tuple[str, str]], probe_dir: Path, twin_dir: Path,
                         probe_objects: dict[int, list[str]], twin_offset: int) -> dict[str, Any]:
    """Mean p(B) per condition at (a) the positions where greedy produced B, (b) the canonical
    prefix "A picture of a A , a" (every probe scene)."""
    from PIL import Image

    from vh_bench.data.scenes import file_name
    from vh_bench.scenes.text import caption_prefix

    tok = forcer.adapter.tokenizer
    at_b: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    canon: dict[str, list[float]] = {c: [] for c in CONDITIONS}
    gaps_b: list[float] = []
    gaps_c: list[float] = []
    for row in probe_rows:
        i = int(row["image_id"])
        a, b = partners[i]
        b_id = tok.convert_tokens_to_ids(b)
        probe_img = Image.open(probe_dir / "images" / file_name("probe", i)).convert("RGB")
        twin_id = i + twin_offset
        twin_img = Image.open(twin_dir / "images" / file_name("twin", twin_id)).convert("RGB")
        images = {"probe": probe_img, "twin": twin_img, "vcd_noise": probe_img, "no_image": None}
        others = [n for n in probe_objects[i] if n != a]
        prefix = tok(caption_prefix([a, b, *others], 1), add_special_tokens=False)["input_ids"]
        ps = {c: forcer.prob(c, images[c], prefix, b_id) for c in CONDITIONS}
        for c in CONDITIONS:
            canon[c].append(ps[c])
        gaps_c.append(ps["twin"] - ps["probe"])
        gen = list(row["token_ids"])
        if b in said.get(i, set()) and b_id in gen:
            cut = gen[: gen.index(b_id)]
            ps = {c: forcer.prob(c, images[c], cut, b_id) for c in CONDITIONS}
            for c in CONDITIONS:
                at_b[c].append(ps[c])
            gaps_b.append(ps["twin"] - ps["probe"])

    def summary(d: dict[str, list[float]], gaps: list[float]) -> dict[str, Any]:
        out = {f"p_B_{c}": bootstrap_mean(d[c]).as_dict() for c in CONDITIONS}
        out["gap_twin_minus_probe"] = bootstrap_mean(gaps).as_dict()
        out["n"] = len(gaps)
        return out

    return {"at_hallucination": summary(at_b, gaps_b), "canonical_prefix": summary(canon, gaps_c)}


def measure(overrides: list[str], num_images: int | None = None) -> dict[str, Any]:
    """Everything the premise needs (num_images: the first N scenes of each split, for tests)."""
    from vh_bench.config import compose
    from vh_bench.runner import load_adapter, plan, resolve_model_path
    from vh_bench.scenes.splits import ID_BASE, probe_partners

    test = run_split("test", overrides, num_images)
    probe = run_split("probe", overrides, num_images)
    control = run_split("control", overrides, num_images)
    cfg = compose([*BASE, "dataset=scenes", "dataset.split=probe", *overrides])
    p = plan(cfg)
    scenes_cfg = p.dataset.config
    partners = probe_partners(scenes_cfg, "probe")
    said_probe = mentions(texts(probe))
    said_control = mentions(texts(control))
    control_objects = scene_objects(_data_dir("control", overrides))
    planted = bootstrap_mean(planted_indicators(said_probe, partners))
    ctrl = bootstrap_mean(control_indicators(said_control, control_objects))
    chair = test.results["metrics"]["chair"]

    adapter = load_adapter(cfg, resolve_model_path(cfg), "cpu", "float32")
    noise_step = int(compose(["method=vcd"]).method.noise_step)
    forcer = Forcer(adapter, noise_step)
    probe_dir, twin_dir = _data_dir("probe", overrides), _data_dir("twin", overrides)
    forced = forced_probabilities(forcer, probe.rows, said_probe, partners, probe_dir, twin_dir,
                                  scene_objects(probe_dir), ID_BASE["twin"] - ID_BASE["probe"])
    per_pair = {}
    for a, b in sorted({v for v in partners.values()}):
        ids = [i for i in said_probe if partners[i] == (a, b)]
        per_pair[f"{a}->{b}"] = bootstrap_mean([float(b in said_probe[i]) for i in ids]).as_dict()
    return {
        "model": str(cfg.model.path),
        "model_sha256": cfg.model.get("sha256"),
        "decoding": "vanilla greedy",
        "num_images": num_images,
        "sees": {"recall": chair["Recall"], "chair_i": chair["CHAIRi"], "chair_s": chair["CHAIRs"],
                 "n": test.results["metrics"]["n_scored"]},
        "planted_rate": planted.as_dict(),
        "control_rate": ctrl.as_dict(),
        "planted_by_pair": per_pair,
        "forced": forced,
        "noise_step": noise_step,
        "run_dirs": {"test": str(test.run_dir), "probe": str(probe.run_dir), "control": str(control.run_dir)},
    }


def _data_dir(split: str, overrides: list[str]) -> Path:
    from vh_bench.config import compose
    from vh_bench.runner import build_dataset

    return build_dataset(compose([*BASE, "dataset=scenes", f"dataset.split={split}", *overrides])).data_dir


def verdict(m: dict[str, Any]) -> dict[str, bool]:
    """The acceptance criteria of issue 13 on measurement `m`."""
    pr, cr = m["planted_rate"], m["control_rate"]
    gap = m["forced"]["at_hallucination"]["gap_twin_minus_probe"]
    return {
        "recall >= 0.90": m["sees"]["recall"] >= 0.90,
        "CHAIR_I <= 0.10": m["sees"]["chair_i"] <= 0.10,
        "planted >= 0.25": pr["value"] >= 0.25,
        "planted >= 3 x control": pr["value"] >= 3 * cr["value"],
        "intervals do not overlap": pr["ci95"][0] > cr["ci95"][1],
        "p(B) twin - probe >= 0.2 at the hallucination": gap["n"] > 0 and gap["value"] >= 0.2,
    }


def _ratio(a: float, b: float) -> str:
    return f"×{a / b:.1f}" if b > 0 else "control never names B"


def _r(d: dict, pct: bool = True) -> str:
    return Rate(d["value"], d["ci95"][0], d["ci95"][1], d["n"]).fmt(pct)


def markdown(m: dict[str, Any], ok: dict[str, bool]) -> str:
    s = m["sees"]
    lines = [
        "# Scenes testbed: the premise (vanilla greedy, shipped checkpoint)",
        "",
        f"Model `{Path(m['model']).name}` (safetensors sha256 `{(m['model_sha256'] or '')[:16]}…`). "
        "Made by `python -m vh_bench.scenes check`. Percentages; brackets are 95 % bootstrap intervals over scenes.",
        "",
        "| criterion | measured | holds |",
        "|---|---|---|",
        f"| it sees: recall ≥ 0.90 (test, n={s['n']}) | {s['recall'] * 100:.1f} | {'yes' if ok['recall >= 0.90'] else 'NO'} |",
        f"| it sees: CHAIR_I ≤ 0.10 (test) | {s['chair_i'] * 100:.1f} (CHAIR_S {s['chair_s'] * 100:.1f}) | {'yes' if ok['CHAIR_I <= 0.10'] else 'NO'} |",
        f"| planted rate P(B \\| A, no B) ≥ 0.25 (probe, n={m['planted_rate']['n']}) | {_r(m['planted_rate'])} | {'yes' if ok['planted >= 0.25'] else 'NO'} |",
        f"| control rate P(B \\| no A, no B) (control, n={m['control_rate']['n']}) | {_r(m['control_rate'])} | — |",
        f"| planted ≥ 3 × control, intervals apart | {_ratio(m['planted_rate']['value'], m['control_rate']['value'])} | "
        f"{'yes' if ok['planted >= 3 x control'] and ok['intervals do not overlap'] else 'NO'} |",
        f"| p(B) with the twin (B drawn) − with the probe image, at the hallucination (n={m['forced']['at_hallucination']['n']}) | "
        f"{_r(m['forced']['at_hallucination']['gap_twin_minus_probe'], False)} | "
        f"{'yes' if ok['p(B) twin - probe >= 0.2 at the hallucination'] else 'NO'} |",
        "",
        "Planted rate per pair: " + ", ".join(f"{k} {_r(v)}" for k, v in m["planted_by_pair"].items()) + ".",
        "",
        f"## p(B) teacher-forced, by image condition (VCD noise step {m['noise_step']})",
        "",
        "| prefix | probe image | twin (B drawn) | VCD-noised probe | image removed |",
        "|---|---|---|---|---|",
    ]
    for key, label in (("at_hallucination", "where greedy produced B"), ("canonical_prefix", "\"A picture of a A , a\" (all probes)")):
        f = m["forced"][key]
        lines.append(f"| {label} (n={f['n']}) | " + " | ".join(_r(f[f'p_B_{c}'], False) for c in CONDITIONS) + " |")
    return "\n".join(lines) + "\n"


def main(overrides: list[str]) -> int:
    from vh_bench.paths import project_root
    from vh_bench.store import atomic_write_json, atomic_write_text

    out_dir = project_root() / "results" / "scenes"
    rest = []
    num_images = None
    for o in overrides:
        if o.startswith("out_dir="):
            out_dir = Path(o.split("=", 1)[1])
        elif o.startswith("num_images="):
            num_images = int(o.split("=", 1)[1])
        else:
            rest.append(o)
    m = measure(rest, num_images)
    ok = verdict(m)
    m["verdict"] = ok
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "premise.json", m)
    md = markdown(m, ok)
    atomic_write_text(out_dir / "premise.md", md)
    print(md)
    return 0 if all(ok.values()) else 1
