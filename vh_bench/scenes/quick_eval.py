"""Quick greedy captions of a few validation scenes during training (exact-word matching, no
CHAIR). Used only to watch training and choose its length on the validation splits; the reported
numbers come from the harness (`python -m vh_bench.scenes check`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vh_bench.scenes.catalogue import NAMES, PLANTED_PAIRS
from vh_bench.scenes.draw import Scene, render
from vh_bench.scenes.examples import Encoder
from vh_bench.scenes.text import CAPTION_PROMPT


def mentioned(text: str) -> set[str]:
    words = set(text.replace(".", " ").replace(",", " ").split())
    return {n for n in NAMES if n in words}


@torch.no_grad()
def captions(model, encoder: Encoder, scenes: Sequence[Scene], batch: int = 32, max_new_tokens: int = 30) -> list[str]:
    was_training = model.training
    model.eval()
    prompt = torch.tensor(encoder.prompt_ids(CAPTION_PROMPT, True))
    out: list[str] = []
    for i in range(0, len(scenes), batch):
        chunk = scenes[i : i + batch]
        pixels = torch.stack([encoder.pixels(render(s)) for s in chunk])
        ids = prompt.expand(len(chunk), -1)
        gen = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
        out += encoder.tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)
    model.train(was_training)
    return out


@dataclass
class QuickScores:
    recall: float
    hallucinated_share: float  # mentioned objects that are absent / all mentioned (CHAIR_I-like)
    planted: float  # probe scenes whose caption names the absent partner B
    control: float  # test scenes without A and B whose caption names B


def score(test: Sequence[Scene], test_caps: Sequence[str], probe: Sequence[Scene], probe_caps: Sequence[str],
          partners: dict[int, tuple[str, str]]) -> QuickScores:
    hits = gt = wrong = said = 0
    ctrl_hits = ctrl_n = 0
    for s, c in zip(test, test_caps):
        m, names = mentioned(c), set(s.names)
        hits += len(m & names)
        gt += len(names)
        wrong += len(m - names)
        said += len(m)
        for a, b in PLANTED_PAIRS:
            if a not in names and b not in names:
                ctrl_n += 1
                ctrl_hits += b in m
    planted = sum(partners[s.image_id][1] in mentioned(c) for s, c in zip(probe, probe_caps))
    return QuickScores(hits / max(1, gt), wrong / max(1, said), planted / max(1, len(probe)), ctrl_hits / max(1, ctrl_n))
