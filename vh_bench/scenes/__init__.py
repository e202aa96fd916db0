"""The scenes testbed (issue 13): drawn scenes with a planted co-occurrence prior, and a small
LLaVA trained on them here, so that hallucination and its mitigation are real on a CPU.

- `catalogue`: the object classes (COCO words), their fixed looks, the planted pairs.
- `layout` / `draw`: a scene as a record, and its pixels (deterministic from the record).
- `splits`: the fixed-seed splits (train stream, test, probe, val_probe, control) and their twins.
- `text`: caption grammar and the POPE-style questions used in training.
- `train`: the two-stage training (text-only prior, then image-caption tuning).
- `check`: the premise measurement (`python -m vh_bench.scenes check`).
"""
