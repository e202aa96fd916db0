"""What each method does on the scenes testbed: recall, CHAIR_S, CHAIR_I (test split), planted rate
(probe split) and control rate (control split), each with a 95 % bootstrap interval over scenes.

`python -m vh_bench.scenes methods [rows=...]` runs configs/scenes/methods.yaml through the harness
(ordinary, resumable run directories) and writes `results/scenes/methods.{json,md}`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from vh_bench.scenes.check import run_split, scene_objects, texts, _data_dir
from vh_bench.scenes.rates import Rate, bootstrap_mean, control_indicators, mention_lists, mentions, planted_indicators

log = logging.getLogger(__name__)


def bootstrap_ratio(num: list[float], den: list[float], *, n_resamples: int = 2000, seed: int = 0) -> Rate:
    """Σnum/Σden with a 95 % bootstrap interval, resampling the units (CHAIR_I, recall)."""
    a, b = np.asarray(num, float), np.asarray(den, float)
    if a.size == 0 or b.sum() == 0:
        return Rate(float("nan"), float("nan"), float("nan"), int(a.size))
    idx = np.random.default_rng(seed).integers(0, a.size, size=(n_resamples, a.size))
    ratios = a[idx].sum(axis=1) / np.maximum(b[idx].sum(axis=1), 1e-12)
    lo, hi = np.quantile(ratios, [0.025, 0.975])
    return Rate(float(a.sum() / b.sum()), float(lo), float(hi), int(a.size))


def caption_stats(said: dict[int, list[str]], objects: dict[int, list[str]]) -> dict[str, Rate]:
    """CHAIR_S, CHAIR_I and recall per caption, counted as CHAIR counts them (every mention for
    CHAIR_I, distinct objects for recall) against the drawn objects."""
    ids = sorted(said)
    halluc = [sum(w not in objects[i] for w in said[i]) for i in ids]
    named = [len(said[i]) for i in ids]
    hit = [len(set(said[i]) & set(objects[i])) for i in ids]
    gt = [len(set(objects[i])) for i in ids]
    return {
        "chair_s": bootstrap_mean([float(h > 0) for h in halluc]),
        "chair_i": bootstrap_ratio(halluc, named),
        "recall": bootstrap_ratio(hit, gt),
    }


def run_row(row: dict[str, Any], splits: list[str], common: list[str], num_images: Any) -> dict[str, Any]:
    from vh_bench.config import compose
    from vh_bench.runner import build_dataset
    from vh_bench.scenes.splits import probe_partners

    ov = [*common, *row["overrides"]]
    n = row.get("num_images", num_images)  # an int for every split, or {split: int | None}
    per_split = {s: (n.get(s) if isinstance(n, dict) else n) for s in splits}
    out: dict[str, Any] = {"label": row["label"], "overrides": row["overrides"], "num_images": per_split}
    runs = {s: run_split(s, ov, per_split[s]) for s in splits}
    scenes_cfg = build_dataset(compose([*ov, "dataset=scenes"])).config
    if "test" in runs:
        st = caption_stats(mention_lists(texts(runs["test"])), scene_objects(_data_dir("test", ov)))
        out.update({k: v.as_dict() for k, v in st.items()})
        chair = runs["test"].results["metrics"]["chair"]
        # The harness's CHAIR and this recount must agree (same words, same objects).
        for k, ref in (("chair_s", chair["CHAIRs"]), ("chair_i", chair["CHAIRi"]), ("recall", chair["Recall"])):
            if abs(out[k]["value"] - ref) > 1e-9:
                log.warning("%s: %s recount %.6f differs from the harness's %.6f", row["label"], k, out[k]["value"], ref)
        speed = runs["test"].results.get("speed", {})
        out["decode_tok_s"] = speed.get("decode_tokens_per_s")
    if "probe" in runs:
        out["planted"] = bootstrap_mean(planted_indicators(mentions(texts(runs["probe"])),
                                                           probe_partners(scenes_cfg, "probe"))).as_dict()
    if "control" in runs:
        out["control"] = bootstrap_mean(control_indicators(mentions(texts(runs["control"])),
                                                           scene_objects(_data_dir("control", ov)))).as_dict()
    out["run_dirs"] = {s: str(r.run_dir) for s, r in runs.items()}
    return out


def _f(d: dict | None) -> str:
    if not d:
        return "—"
    return Rate(d["value"], d["ci95"][0], d["ci95"][1], d["n"]).fmt()


def markdown(rows: list[dict[str, Any]], sha: str | None) -> str:
    lines = [
        "# What each method does on the scenes testbed",
        "",
        f"Shipped scenes checkpoint (sha256 `{(sha or '')[:16]}…`), each method at its defaults (nothing tuned on these "
        "splits). Percentages with 95 % bootstrap intervals over scenes. Recall, CHAIR_S and CHAIR_I on the test split; "
        "planted = P(names B | A present, B absent) on the probe split; control = P(names B | neither) on the control "
        "split. Made by `python -m vh_bench.scenes methods`.",
        "",
        "| method | n test / probe / control | recall ↑ | CHAIR_S ↓ | CHAIR_I ↓ | planted ↓ | control | decode tok/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        tok = f"{r['decode_tok_s']:.0f}" if r.get("decode_tok_s") else "—"
        n = " / ".join(str(r[k]["n"]) if r.get(k) else "—" for k in ("recall", "planted", "control"))
        lines.append(f"| {r['label']} | {n} | {_f(r.get('recall'))} | {_f(r.get('chair_s'))} | {_f(r.get('chair_i'))} | "
                     f"{_f(r.get('planted'))} | {_f(r.get('control'))} | {tok} |")
    return "\n".join(lines) + "\n"


def main(overrides: list[str]) -> int:
    from hydra import compose as hcompose, initialize_config_dir
    from omegaconf import OmegaConf

    from vh_bench.config import compose
    from vh_bench.paths import config_dir, project_root
    from vh_bench.store import atomic_write_json, atomic_write_text

    with initialize_config_dir(config_dir=str(config_dir() / "scenes"), version_base=None):
        spec = OmegaConf.to_container(hcompose(config_name="methods", overrides=overrides), resolve=True)
    out_dir = project_root() / "results" / "scenes"
    rows = []
    for row in spec["rows"]:
        log.info("scenes methods: %s", row["label"])
        rows.append(run_row(row, spec["splits"], spec["common"], spec["num_images"]))
    sha = compose(["model=scenes"]).model.get("sha256")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "methods.json", {"model_sha256": sha, "rows": rows})
    md = markdown(rows, sha)
    atomic_write_text(out_dir / "methods.md", md)
    print(md)
    return 0
