"""The training record as a picture: losses of both stages and the validation scores
(`python -m vh_bench.scenes curve [run_dir=...] [out=...]`)."""

from __future__ import annotations

import json
from pathlib import Path


def plot(log_path: Path, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    def last(stage: str) -> int:
        return max((r["step"] for r in recs if r["kind"] == "loss" and r["stage"] == stage), default=-1) + 1

    # Steps of all stages on one axis: each stage starts where the previous one ended.
    offset = {"vision": 0, "text": last("vision")}
    offset["image"] = offset["text_mix"] = offset["text"] + last("text")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for stage, colour, label in (("vision", "tab:green", "stage 0: vision tower, patch labels"),
                                 ("text", "tab:grey", "stage 1: text-only prior"),
                                 ("image", "tab:blue", "stage 2: image pairs"),
                                 ("text_mix", "tab:orange", "stage 2: text-only batches")):
        pts = [(r["step"] + offset[stage], r["loss"]) for r in recs if r["kind"] == "loss" and r["stage"] == stage]
        if pts:
            ax1.plot(*zip(*pts), ".", ms=2, color=colour, label=label)
    ax1.set_xlabel("optimiser step (all stages)")
    ax1.set_ylabel("loss (answer tokens)")
    ax1.set_yscale("log")
    ax1.legend()
    ax1.set_title("training loss")
    evals = [r for r in recs if r["kind"] == "eval"]
    if evals:
        steps = [r["step"] for r in evals]
        for key, label in (("recall", "recall (val_test)"), ("hallucinated_share", "absent / named (val_test)"),
                           ("planted", "planted rate (val_probe)"), ("control", "control rate (val_test)")):
            ax2.plot(steps, [r[key] for r in evals], "o-", label=label)
        ax2.set_xlabel("stage-2 step")
        ax2.set_ylim(0, 1)
        ax2.legend()
        ax2.set_title("validation scenes, greedy (quick word match)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(overrides: list[str]) -> None:
    from vh_bench.paths import project_root

    opts = dict(o.split("=", 1) for o in overrides)
    run_dir = Path(opts.get("run_dir", project_root() / ".cache" / "scenes_train" / "default"))
    out = Path(opts.get("out", project_root() / "results" / "scenes" / "training.png"))
    print(plot(run_dir / "log.jsonl", out))
