"""The scenes generator: determinism, split contents, the planted prior, captions, pixels."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from vh_bench.data.scenes import generate_split
from vh_bench.errors import ConfigError
from vh_bench.scenes.catalogue import BY_NAME, CLASSES, PAIRED, PLANTED_PAIRS
from vh_bench.scenes.draw import GRID, render
from vh_bench.scenes.splits import ScenesConfig, probe_partners, split_scenes, train_stream
from vh_bench.scenes.text import caption, caption_order, caption_prefix

SMALL = ScenesConfig(n_test=20, n_probe_per_pair=6, n_control=12, n_val_test=6, n_val_probe_per_pair=2)
COCO_MAX_IMAGE_ID = 581_929  # the largest image id of COCO train+val 2014


def _digest(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_same_seed_same_pixels_and_annotations(tmp_path):
    a = generate_split(tmp_path / "a", SMALL, "probe")
    b = generate_split(tmp_path / "b", SMALL, "probe")
    assert _digest(a) == _digest(b) and len(_digest(a)) == 18 + 3  # 18 JPEGs, 2 annotation files, records
    other = generate_split(tmp_path / "c", ScenesConfig(**{**SMALL.__dict__, "seed": 1}), "probe")
    assert _digest(other) != _digest(a)


def test_unknown_split_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="dataset.split"):
        generate_split(tmp_path, SMALL, "probes")


def test_probe_twin_control_contents():
    cfg = ScenesConfig()
    probe, twin, control = (split_scenes(cfg, s) for s in ("probe", "twin", "control"))
    partners = probe_partners(cfg)
    assert len(probe) == len(twin) == 360 and len(control) == 360
    assert Counter(partners[s.image_id] for s in probe) == {pair: 120 for pair in PLANTED_PAIRS}
    for p, t in zip(probe, twin):
        a, b = partners[p.image_id]
        assert a in p.names and b not in p.names
        # The twin is the probe scene, object for object, plus B in a free cell.
        assert t.objects[:-1] == p.objects and t.objects[-1].name == b
        assert t.objects[-1].cell not in {o.cell for o in p.objects}
        assert (t.background, t.noise_seed) == (p.background, p.noise_seed)
    assert all(not (set(s.names) & PAIRED) for s in control)


def test_image_ids_never_coincide_with_coco():
    cfg = ScenesConfig()
    ids = [s.image_id for split in ("test", "probe", "twin", "control", "val_test", "val_probe") for s in split_scenes(cfg, split)]
    assert len(set(ids)) == len(ids) and min(ids) > COCO_MAX_IMAGE_ID


def test_the_prior_is_planted_at_the_configured_strength():
    """P(B | A) in the training stream follows p_partner; P(B | no A) stays at the base rate."""
    stream = train_stream(ScenesConfig(), 0.7, seed=3)
    with_a = b_given_a = without_a = b_without_a = 0
    for _ in range(6000):
        names = set(next(stream).names)
        for a, b in PLANTED_PAIRS:
            if a in names:
                with_a += 1
                b_given_a += b in names
            else:
                without_a += 1
                b_without_a += b in names
    assert abs(b_given_a / with_a - 0.7) < 0.04
    assert b_without_a / without_a < 0.25  # 1–5 of 18 classes: about 0.17


def test_caption_puts_a_present_partner_right_after_its_a():
    rng = random.Random(0)
    for _ in range(200):
        names = rng.sample([c.name for c in CLASSES], rng.randint(1, 5))
        order = caption_order(names, rng)
        assert sorted(order) == sorted(names)
        for a, b in PLANTED_PAIRS:
            if a in names and b in names:
                assert order[order.index(a) + 1] == b


def test_caption_text_and_prefixes():
    assert caption(["dog"]) == "A picture of a dog ."
    assert caption(["fork", "knife", "cup"]) == "A picture of a fork , a knife and a cup ."
    # A prefix is the caption cut just before an object word.
    full = caption(["fork", "knife", "cup"])
    assert full.startswith(caption_prefix(["fork", "knife", "cup"], 1) + " knife")
    assert full.startswith(caption_prefix(["fork", "knife", "cup"], 2) + " cup")
    assert caption_prefix(["fork", "knife"], 1) == "A picture of a fork and a"


def test_each_object_is_drawn_in_its_class_colour_in_its_cell():
    scene = split_scenes(ScenesConfig(), "test")[0]
    px = np.asarray(render(scene)).astype(int)
    cell = scene.image_size // GRID
    for o in scene.objects:
        cls = BY_NAME[o.name]
        r, c = divmod(o.cell, GRID)
        x0, y0 = c * cell + o.dx, r * cell + o.dy
        box = px[y0 : y0 + o.size, x0 : x0 + o.size].reshape(-1, 3)
        # The class colour (exactly, as drawn) covers a good part of the object's box.
        share = np.mean(np.all(box == np.array(cls.colour), axis=1))
        assert share > 0.15, (o.name, share)


def test_annotations_are_coco_format(tmp_path):
    d = generate_split(tmp_path, SMALL, "test")
    inst = json.loads((d / "annotations" / "instances_scenes_test.json").read_text())
    caps = json.loads((d / "annotations" / "captions_scenes_test.json").read_text())
    scenes = split_scenes(SMALL, "test")
    names = {c["id"]: c["name"] for c in inst["categories"]}
    by_image = {s.image_id: sorted(s.names) for s in scenes}
    got: dict[int, list[str]] = {}
    for a in inst["annotations"]:
        got.setdefault(a["image_id"], []).append(names[a["category_id"]])
    assert {k: sorted(v) for k, v in got.items()} == by_image
    assert [c["image_id"] for c in caps["annotations"]] == [s.image_id for s in scenes]
    assert all((d / "images" / im["file_name"]).is_file() for im in inst["images"])
