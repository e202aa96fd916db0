"""The run browser (`python -m vh_bench.show`): CHAIR's words located in the captions, POPE answers
judged, the text form, and the HTML page rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from tests.helpers import FAST, results_override, run_cli
from vh_bench.config import compose
from vh_bench.data.demo import generate_demo
from vh_bench.show.page import COLOURS, render_html, render_text
from vh_bench.show.views import CORRECT, HALLUCINATED, gather


def _write_run(root: Path, name: str, overrides: list[str], lines: list[dict]) -> Path:
    """A run directory as the runner leaves it before scoring: resolved config + sample lines."""
    cfg = compose([*FAST, results_override(root), *overrides])
    d = root / name
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (d / "samples.jsonl").write_text("".join(json.dumps({"error": None, **x}) + "\n" for x in lines))
    return d


def _demo_truth(cfg_root: Path) -> dict[int, set[str]]:
    """Objects per demo image, read straight from the generated COCO-format annotations."""
    cfg = compose([*FAST, results_override(cfg_root)])
    d = generate_demo(Path(str(cfg.paths.demo_dir)), num_images=12, image_size=336, seed=0)
    inst = json.loads((d / "annotations" / "instances_demo.json").read_text())
    names = {c["id"]: c["name"] for c in inst["categories"]}
    objects: dict[int, set[str]] = {im["id"]: set() for im in inst["images"]}
    for a in inst["annotations"]:
        objects[a["image_id"]].add(names[a["category_id"]])
    return objects


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("show")
    objects = _demo_truth(root)
    ids = sorted(objects)[:2]
    a, b = ids
    present = sorted(n for n in objects[a] if " " not in n)[0]  # a one-word object of image a
    absent = next(n for n in ("giraffe", "zebra", "elephant") if n not in objects[a] | objects[b])
    caption_a = f"There is a {present} and a {absent}."
    caption_b = "A hot dog next to a teddy bear."  # two double words (§1.4 step 4), each one mention
    vanilla = _write_run(root, "vanilla", ["runtime.limit=2"], [
        {"sample_id": f"demo:{a}", "image_id": a, "text": caption_a},
        {"sample_id": f"demo:{b}", "image_id": b, "text": caption_b},
    ])  # fmt: skip
    vcd = _write_run(root, "vcd", ["method=vcd", "runtime.limit=2"], [
        {"sample_id": f"demo:{a}", "image_id": a, "text": f"A {present}."},
        {"sample_id": f"demo:{b}", "image_id": b, "text": "", "error": "corrupt image"},
    ])  # fmt: skip
    # POPE: the first two generated questions, one answered right, one wrong.
    pope_cfg = compose([*FAST, results_override(root), "dataset=demo_pope"])
    from hydra.utils import instantiate

    ds = instantiate(pope_cfg.dataset, _convert_="all")
    qs = ds.samples()[:2]
    flip = {"yes": "No", "no": "Yes"}
    answers = [qs[0].meta["label"].capitalize(), flip[qs[1].meta["label"]]]
    pope = _write_run(root, "pope", ["dataset=demo_pope", "runtime.limit=2"], [
        {"sample_id": q.sample_id, **q.meta, "text": ans} for q, ans in zip(qs, answers)
    ])  # fmt: skip
    return {"root": root, "dirs": [vanilla, vcd, pope], "a": a, "b": b, "objects": objects,
            "present": present, "absent": absent, "caption_a": caption_a, "pope": qs}  # fmt: skip


def test_caption_words_are_located_and_classified(runs: dict) -> None:
    browse = gather(runs["dirs"])
    by_id = {v.image_id: v for v in browse.images if v.image_id is not None}
    img_a, img_b = by_id[runs["a"]], by_id[runs["b"]]
    van = next(c for c in img_a.captions if c.method == "Vanilla")
    got = [(van.text[m.start : m.end], m.kind) for m in van.marks]
    assert got == [(runs["present"], CORRECT), (runs["absent"], HALLUCINATED)]
    assert van.missed == sorted(runs["objects"][runs["a"]] - {runs["present"]})
    # Double words are one mention each, marked over both words.
    van_b = next(c for c in img_b.captions if c.method == "Vanilla")
    kind = {w: CORRECT if w in runs["objects"][runs["b"]] else HALLUCINATED for w in ("hot dog", "teddy bear")}
    assert [(van_b.text[m.start : m.end], m.kind) for m in van_b.marks] == list(kind.items())
    vcd_b = next(c for c in img_b.captions if c.method == "VCD")
    assert vcd_b.error == "corrupt image" and not vcd_b.marks
    assert img_a.has_hallucination and img_a.prompts["caption"] == "Please describe this image in detail."


def test_pope_answers_are_judged_against_the_labels(runs: dict) -> None:
    browse = gather(runs["dirs"])
    answers = [a for v in browse.images for a in v.answers]
    q0, q1 = runs["pope"]
    by_q = {a.question: a for a in answers}
    assert by_q[q0.prompt].right and by_q[q0.prompt].label == q0.meta["label"]
    assert not by_q[q1.prompt].right and by_q[q1.prompt].predicted != q1.meta["label"]
    # The POPE image is the same file as a caption image: both show on one image.
    pope_keys = {v.key for v in browse.images if v.answers}
    assert pope_keys <= {v.key for v in browse.images}


def test_text_form_and_its_filters(runs: dict) -> None:
    browse = gather(runs["dirs"])
    text = render_text(browse)
    assert f"Vanilla: There is a [+{runs['present']}] and a [!{runs['absent']}]." in text
    assert "VCD: error: corrupt image" in text and "WRONG" in text and " right" in text
    only = render_text(browse, only_hallucinated=True)
    assert f"VCD: A [+{runs['present']}]." not in only and f"[!{runs['absent']}]" in only and "WRONG" not in only
    assert f"VCD: A [+{runs['present']}]." in text
    cli = run_cli(["--text", *map(str, runs["dirs"])], module="vh_bench.show")
    assert cli.returncode == 0, cli.stderr
    assert f"[!{runs['absent']}]" in cli.stdout


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed (make test installs Debian's chromium as root)")
        pytest.skip("chromium not installed (make chromium, as root)")
    return exe


def _browser(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'profile'}"]  # fmt: skip
    return subprocess.run([exe, *flags, *args], capture_output=True, text=True, timeout=300)


def _rgb(hex_colour: str) -> np.ndarray:
    return np.array([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)])


def test_page_renders_the_marks_in_chromium(runs: dict, tmp_path: Path) -> None:
    exe = _chromium()
    page = tmp_path / "page.html"
    cli = run_cli([*map(str, runs["dirs"]), "--out", str(page)], module="vh_bench.show")
    assert cli.returncode == 0, cli.stderr
    html_text = page.read_text()
    assert "data:image/jpeg;base64," in html_text and "http" not in html_text.split("<body>")[1]
    shot = tmp_path / "shot.png"
    proc = _browser(exe, tmp_path, "--window-size=1200,1400", f"--screenshot={shot}", page.as_uri())
    assert shot.is_file(), proc.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # Count the marks' colours right of the picture column (pictures are at most 336 px wide), so
    # an image that happens to contain such a colour cannot pass the test.
    right = px[:, 380:]
    counts = {kind: int((np.abs(right - _rgb(colour)).max(axis=2) <= 8).sum()) for kind, colour in COLOURS.items()}
    assert all(n > 200 for n in counts.values()), counts
    # The pictures are drawn: the first demo scene is not the page's white.
    assert len(np.unique(px[200:420, 20:330].reshape(-1, 3), axis=0)) > 3

    # The filters (run by the browser's JS, given in the address): only captions with a hallucination.
    dom = _browser(exe, tmp_path, "--dump-dom", page.as_uri() + "#only").stdout
    assert '<div class="cap hidden" data-method="VCD" data-hall="0">' in dom
    assert '<div class="cap" data-method="Vanilla" data-hall="1">' in dom and '<tr class="ans right hidden"' in dom
    plain = _browser(exe, tmp_path, "--dump-dom", page.as_uri()).stdout
    assert "hidden" not in plain.split("<body", 1)[1].split("<script", 1)[0] and '<div class="cap" data-method="VCD"' in plain
    # One method against another (here VCD against itself): the other method's captions and answers go.
    vs = _browser(exe, tmp_path, "--dump-dom", page.as_uri() + "#a=VCD&b=VCD").stdout
    assert '<body class="vs">' in vs and '<div class="cap" data-method="VCD" data-hall="0">' in vs
    assert '<div class="cap hidden" data-method="Vanilla"' in vs and '<tr class="ans right hidden"' in vs
