"""Scene sampling and the fixed-seed splits of the testbed.

A scene draws 1–5 distinct classes; the planted prior is one number, `p_partner` = P(B present |
A present) for every planted pair (A, B). The text the language model is pre-trained on uses a
strong prior, the image–caption pairs a weaker one (`ScenesConfig`). The evaluation splits:

- `test`: in-distribution scenes (the image–caption training distribution);
- `probe`: each holds some A without its partner B (1–4 objects, so the twin fits);
- `twin`: each probe scene drawn again *with* B in a free cell (same background, noise, objects);
- `control`: scenes holding no member of any planted pair;
- `val_probe` / `val_test`: the same kinds with other seeds, for choosing training steps; the
  reported splits are never used for a choice.

Image ids start at 20,000,000, above COCO's id range, so no scene id can match a COCO image.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from vh_bench.scenes.catalogue import NAMES, PAIRED, PLANTED_PAIRS
from vh_bench.scenes.draw import GRID, MAX_FRACTION, MIN_FRACTION, Placed, Scene

ID_BASE = {
    "test": 20_000_000,
    "probe": 21_000_000,
    "twin": 22_000_000,
    "control": 23_000_000,
    "val_probe": 24_000_000,
    "val_test": 25_000_000,
    "val_twin": 26_000_000,
    "train": 30_000_000,
}
SPLITS = ("test", "probe", "twin", "control", "val_probe", "val_test", "val_twin")


@dataclass(frozen=True)
class ScenesConfig:
    """What fixes the scenes of every split (part of the dataset's identity)."""

    image_size: int = 168
    min_objects: int = 1
    max_objects: int = 5
    p_partner: float = 0.6  # P(B | A) in the image–caption pairs (and the test split)
    seed: int = 0
    n_test: int = 300
    n_probe_per_pair: int = 120  # 360 probe scenes with three pairs
    n_control: int = 360
    n_val_test: int = 150
    n_val_probe_per_pair: int = 50


def _place(rng: random.Random, names: list[str], image_size: int, image_id: int) -> Scene:
    cell = image_size // GRID
    cells = rng.sample(range(GRID * GRID), len(names))
    objects = []
    for name, c in zip(names, cells):
        size = rng.randint(int(MIN_FRACTION * cell), int(MAX_FRACTION * cell))
        objects.append(Placed(name, c, size, rng.randint(0, cell - size), rng.randint(0, cell - size)))
    grey = rng.randint(70, 175)
    first = tuple(max(0, min(255, grey + rng.randint(-30, 30))) for _ in range(3))
    second = tuple(max(0, min(255, v + rng.randint(-40, 40))) for v in first)
    return Scene(image_id, tuple(objects), (first, second), rng.uniform(0, 6.283), rng.getrandbits(32), image_size)


def sample_names(
    rng: random.Random,
    n: int,
    p_partner: float,
    must: tuple[str, ...] = (),
    exclude: frozenset[str] = frozenset(),
) -> list[str]:
    """n distinct classes: `must` first, the rest uniform; then the prior: for each pair whose A
    is present and whose B is free (neither forced nor excluded), B is present with p_partner."""
    chosen = list(must)
    pool = [c for c in NAMES if c not in exclude and c not in chosen]
    chosen += rng.sample(pool, n - len(chosen))
    fixed = set(must) | set(exclude)
    for a, b in PLANTED_PAIRS:
        if a not in chosen or b in fixed:
            continue
        want = rng.random() < p_partner
        if want and b not in chosen:
            free = [i for i, c in enumerate(chosen) if c not in fixed and c not in PAIRED]
            if len(chosen) < 5 and (not free or rng.random() < 0.5):
                chosen.append(b)
            elif free:
                chosen[rng.choice(free)] = b
        elif not want and b in chosen:
            spare = [c for c in NAMES if c not in chosen and c not in PAIRED and c not in exclude]
            chosen[chosen.index(b)] = rng.choice(spare)
    return chosen


def sample_scene(rng: random.Random, image_id: int, cfg: ScenesConfig, p_partner: float,
                 must: tuple[str, ...] = (), exclude: frozenset[str] = frozenset(),
                 max_objects: int | None = None) -> Scene:
    n = rng.randint(max(cfg.min_objects, len(must)), max_objects or cfg.max_objects)
    return _place(rng, sample_names(rng, n, p_partner, must, exclude), cfg.image_size, image_id)


def add_partner(scene: Scene, name: str, rng: random.Random, image_id: int) -> Scene:
    """`scene` with `name` drawn in a free cell (the probe's twin)."""
    cell = scene.image_size // GRID
    free = sorted(set(range(GRID * GRID)) - {o.cell for o in scene.objects})
    size = rng.randint(int(MIN_FRACTION * cell), int(MAX_FRACTION * cell))
    placed = Placed(name, rng.choice(free), size, rng.randint(0, cell - size), rng.randint(0, cell - size))
    return scene.with_object(placed, image_id)


def _rng(cfg: ScenesConfig, split: str) -> random.Random:
    return random.Random(f"vh_bench.scenes|{split}|{cfg.seed}")


def _probes(cfg: ScenesConfig, split: str, per_pair: int) -> list[tuple[Scene, str]]:
    rng = _rng(cfg, split)
    out = []
    for k in range(per_pair * len(PLANTED_PAIRS)):
        a, b = PLANTED_PAIRS[k % len(PLANTED_PAIRS)]
        # The other pairs follow the training prior; this pair is A without B.
        scene = sample_scene(rng, ID_BASE[split] + k, cfg, cfg.p_partner, must=(a,), exclude=frozenset({b}),
                             max_objects=cfg.max_objects - 1)
        out.append((scene, b))
    return out


def split_scenes(cfg: ScenesConfig, split: str) -> list[Scene]:
    """The scenes of one evaluation split, in order (deterministic in `cfg`)."""
    if split in ("test", "val_test"):
        rng = _rng(cfg, split)
        n = cfg.n_test if split == "test" else cfg.n_val_test
        return [sample_scene(rng, ID_BASE[split] + k, cfg, cfg.p_partner) for k in range(n)]
    if split == "control":
        rng = _rng(cfg, split)
        return [sample_scene(rng, ID_BASE[split] + k, cfg, cfg.p_partner, exclude=PAIRED) for k in range(cfg.n_control)]
    if split in ("probe", "val_probe"):
        per = cfg.n_probe_per_pair if split == "probe" else cfg.n_val_probe_per_pair
        return [s for s, _ in _probes(cfg, split, per)]
    if split in ("twin", "val_twin"):
        src = "probe" if split == "twin" else "val_probe"
        per = cfg.n_probe_per_pair if split == "twin" else cfg.n_val_probe_per_pair
        rng = _rng(cfg, split)
        return [add_partner(s, b, rng, ID_BASE[split] + (s.image_id - ID_BASE[src])) for s, b in _probes(cfg, src, per)]
    raise ValueError(f"unknown scenes split {split!r}; one of {', '.join(SPLITS)}")


def probe_partners(cfg: ScenesConfig, split: str = "probe") -> dict[int, tuple[str, str]]:
    """image id → (A, B) of each probe scene."""
    per = cfg.n_probe_per_pair if split == "probe" else cfg.n_val_probe_per_pair
    return {s.image_id: (s.objects[0].name, b) for s, b in _probes(cfg, split, per)}


def train_stream(cfg: ScenesConfig, p_partner: float, seed: int) -> Iterator[Scene]:
    """An endless stream of training scenes (ids are not image ids of any split)."""
    rng = random.Random(f"vh_bench.scenes|train|{cfg.seed}|{seed}|{p_partner}")
    k = 0
    while True:
        yield sample_scene(rng, ID_BASE["train"] + k, cfg, p_partner)
        k += 1
