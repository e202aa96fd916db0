"""Benchmark CHAIR: scoring 500 captions (opera dialect) and building GT for 500 images.

    python scripts/bench_chair.py [--annotations DIR] [--workdir DIR] [--skip-reference]

Scoring uses OPERA's golden logs (500 captions each). The reference-style loop re-creates what
OPERA's chair.py does per caption (nltk.pos_tag, a fresh WordNetLemmatizer, no memo) to compare.

GT building uses real COCO annotations if `--annotations` (or $VH_BENCH_COCO_ANNOTATIONS) names a
folder with instances_*.json + captions_*.json; otherwise it generates synthetic files with
COCO train+val2014's counts (123,287 images, 896,782 instances, 616,767 captions, ~590 MB) once
into the work dir, then builds the GT restricted to 500 val ids (cold: no cached result).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vh_bench.metrics.chair import evaluate_chair, load_ground_truth, read_captions, read_image_list  # noqa: E402
from vh_bench.metrics.chair_gt import build_ground_truth  # noqa: E402
from vh_bench.metrics.chair_words import load_synonyms, normalise_caption  # noqa: E402
from vh_bench.nltk_env import ensure_nltk  # noqa: E402
from vh_bench.paths import cache_dir, shared_dir  # noqa: E402

GOLDEN = shared_dir() / "data" / "chair" / "golden" / "opera"
# COCO's 80 category ids (1..90 with gaps), in the synonym table's order.
COCO_CAT_IDS = [i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}]
# (split, images, instance annotations, caption annotations) of COCO 2014
SPLITS = [("val2014", 40504, 291875, 202654), ("train2014", 82783, 604907, 414113)]


class Timing(float):
    """Wall seconds (the float value) that also carries CPU seconds: the machine may be shared."""

    cpu: float

    def __format__(self, spec: str) -> str:
        return f"{float(self):{spec}} s wall / {self.cpu:{spec}} s CPU"


def timed(fn, *args, **kwargs):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args, **kwargs)
    res = Timing(time.perf_counter() - t)
    res.cpu = time.process_time() - c
    return out, res


def reference_style(captions: list[tuple[int, str]], gt: dict) -> tuple[int, int]:
    """OPERA-style per-caption loop (nltk.pos_tag per call, fresh lemmatizer): for timing only."""
    import nltk
    from nltk.stem import WordNetLemmatizer

    syn = load_synonyms()
    from vh_bench.metrics.chair_words import merge_double_words

    halluc = mentions = 0
    for image_id, caption in captions:
        tokens = nltk.word_tokenize(caption.lower())
        wnl = WordNetLemmatizer()
        pos = {"J": "a", "V": "v", "N": "n", "R": "r"}
        norm = [wnl.lemmatize(w, pos.get(t[:1], "n")) for w, t in nltk.pos_tag(tokens)]
        merged, _ = merge_double_words(norm)
        if "toilet" in merged and "seat" in merged:
            merged = [w for w in merged if w != "seat"]
        nodes = [syn.node_of[w] for w in merged if w in syn.node_of]
        mentions += len(nodes)
        halluc += sum(n not in gt.get(image_id, ()) for n in nodes)
    return halluc, mentions


def bench_scoring(skip_reference: bool) -> None:
    (_, t_setup) = timed(ensure_nltk)
    from vh_bench.metrics.chair_words import normaliser

    (_, t_norm) = timed(normaliser, "opera")
    gt, t_gt = timed(load_ground_truth, "pattern")
    print(f"start-up: NLTK checks + WordNet load {t_setup:.2f}, tagger {t_norm:.2f}, "
          f"GT cache load (123,287 images) {t_gt:.2f}")
    for log_name in ("minigpt4/greedy.jsonl", "instructblip/greedy.jsonl"):
        caps = read_captions(GOLDEN / log_name)
        normalise_caption.cache_clear()
        res, t_cold = timed(evaluate_chair, caps, gt)
        res2, t_warm = timed(evaluate_chair, caps, gt)  # same captions: the memo path
        n_tok = res.summary["tokens_sum"]
        print(f"score {log_name}: {len(caps)} captions, {n_tok} tokens: {t_cold:.2f} cold "
              f"({1000 * t_cold / len(caps):.2f} ms/caption wall), {t_warm:.3f} re-scored with another "
              f"GT; CHAIRs={res.summary['CHAIRs']}, CHAIRi={res.summary['CHAIRi']:.6f}")
        if not skip_reference:
            (h, m), t_ref = timed(reference_style, caps, gt.objects)
            assert (h, m) == (res.summary["hallucinated_mentions"], res.summary["object_mentions"])
            print(f"  reference-style loop on the same captions: {t_ref:.2f} (same counts {h}/{m}); "
                  f"speed-up x{t_ref / t_cold:.1f}")


# ---------------------------------------------------------------------------------------------
# Synthetic COCO-sized annotations

_SUBJECTS = ["A man", "A woman", "Two people", "A young boy", "A girl", "A group of people", "A dog",
             "A cat", "A horse", "A person", "An elephant", "A baby elephant", "Some men"]
_VERBS = ["sitting on", "standing next to", "riding", "holding", "looking at", "walking past",
          "playing with", "skiing near", "seated at", "eating", "lying on"]
_PLACES = ["in a kitchen.", "on a street.", "near the beach.", "in a living room.", "at the park.",
           "on a snowy hill.", "on the train tracks.", "in front of a building."]


def _caption(rng: random.Random, objects: list[str]) -> str:
    obj = rng.choice(objects) if objects and rng.random() < 0.8 else rng.choice(["table", "bench", "bus"])
    extra = f" and a {rng.choice(objects)}" if objects and rng.random() < 0.4 else ""
    return f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} a {obj}{extra} {rng.choice(_PLACES)}"


def _write_split(out: Path, split: str, ids: list[int], n_inst: int, n_caps: int, rng: random.Random,
                 cat_names: list[str]) -> None:
    images = [{"license": 3, "file_name": f"COCO_{split}_{i:012d}.jpg",
               "coco_url": f"http://images.cocodataset.org/{split}/COCO_{split}_{i:012d}.jpg",
               "height": 480, "width": 640, "date_captured": "2013-11-14 11:18:45",
               "flickr_url": "http://farm3.staticflickr.com/2567/4054411001_f5c5d9c04f_z.jpg", "id": i}
              for i in ids]
    per_image: dict[int, list[str]] = {i: [] for i in ids}
    cats = [{"supercategory": "thing", "id": cid, "name": name} for cid, name in zip(COCO_CAT_IDS, cat_names)]
    with open(out / f"instances_{split}.json", "w") as fh:
        fh.write('{"info": {"description": "synthetic COCO-sized"}, "licenses": [], "images": ')
        json.dump(images, fh)
        fh.write(', "annotations": [')
        for k in range(n_inst):
            image_id = rng.choice(ids)
            c = rng.randrange(80)
            per_image[image_id].append(cat_names[c])
            if rng.random() < 0.01:  # crowd annotations carry RLE dicts, not polygons
                seg: object = {"counts": [rng.randrange(500) for _ in range(60)], "size": [480, 640]}
            else:
                seg = [[round(rng.uniform(0, 640), 2) for _ in range(2 * rng.randint(8, 44))]]
            ann = {"segmentation": seg, "area": round(rng.uniform(10, 50000), 4), "iscrowd": int(isinstance(seg, dict)),
                   "image_id": image_id, "bbox": [round(rng.uniform(0, 600), 2) for _ in range(4)],
                   "category_id": COCO_CAT_IDS[c], "id": k + 1}
            fh.write(("," if k else "") + json.dumps(ann))
        fh.write('], "categories": ')
        json.dump(cats, fh)
        fh.write("}")
    caps = []
    for k in range(n_caps):
        image_id = ids[k % len(ids)]
        caps.append({"image_id": image_id, "id": k + 1, "caption": _caption(rng, per_image[image_id])})
    with open(out / f"captions_{split}.json", "w") as fh:
        json.dump({"info": {}, "licenses": [], "images": images, "annotations": caps}, fh)


def synthetic_coco(workdir: Path, val_ids: list[int]) -> Path:
    out = workdir / "coco_synthetic_2014"
    if (out / "DONE").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = random.Random(0)
    cat_names = list(load_synonyms().nodes)
    pool = [i for i in range(1, 581930) if i not in set(val_ids)]
    rng.shuffle(pool)
    n_val, n_train = SPLITS[0][1], SPLITS[1][1]
    split_ids = {"val2014": sorted(val_ids + pool[: n_val - len(val_ids)]),
                 "train2014": sorted(pool[n_val - len(val_ids): n_val - len(val_ids) + n_train])}
    t = time.perf_counter()
    for split, _, n_inst, n_caps in SPLITS:
        _write_split(out, split, split_ids[split], n_inst, n_caps, rng, cat_names)
    (out / "DONE").write_text("ok\n")
    size = sum(f.stat().st_size for f in out.glob("*.json")) / 1e6
    print(f"generated synthetic COCO-sized annotations ({size:.0f} MB) in {time.perf_counter() - t:.0f} s: {out}")
    return out


def bench_gt(annotations: Path | None, workdir: Path) -> None:
    ids = read_image_list(shared_dir() / "data" / "chair" / "chair500_opera_llava.txt")
    if annotations is None:
        annotations = synthetic_coco(workdir, ids)
        kind = "synthetic"
    else:
        kind = "real"
    size = sum(f.stat().st_size for f in annotations.glob("*_*.json")) / 1e6
    for dialect in ("opera", "original"):
        with tempfile.TemporaryDirectory() as tmp:  # a fresh cache dir: always a cold build
            (gt, path), t_cold = timed(build_ground_truth, annotations, dialect=dialect, image_ids=ids,
                                       cache_dir=tmp, progress=False)
            (gt2, _), t_hit = timed(build_ground_truth, annotations, dialect=dialect, image_ids=ids,
                                    cache_dir=tmp, progress=False)
            assert gt2.objects == gt.objects and gt2.sha256 == gt.sha256
        print(f"GT build ({kind} COCO annotations, {size:.0f} MB), 500 images, {dialect} dialect: "
              f"{t_cold:.2f} cold, {t_hit:.2f} cache hit; {len(gt.objects)} images, "
              f"{sum(map(len, gt.objects.values())) / max(len(gt.objects), 1):.2f} objects/image")
        # The same in a fresh interpreter: adds imports, NLTK checks and the WordNet load (~3 s).
        with tempfile.TemporaryDirectory() as tmp:
            code = ("import sys; from vh_bench.metrics.chair_gt import build_ground_truth; "
                    "from vh_bench.metrics.chair import read_image_list; "
                    "build_ground_truth(sys.argv[1], dialect=sys.argv[2], cache_dir=sys.argv[3], "
                    "image_ids=read_image_list(sys.argv[4]), progress=False)")
            t, ru = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
            subprocess.run([sys.executable, "-c", code, str(annotations), dialect, tmp,
                            str(shared_dir() / "data" / "chair" / "chair500_opera_llava.txt")],
                           check=True, cwd=Path(__file__).resolve().parents[1])
            ru2 = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = (ru2.ru_utime + ru2.ru_stime) - (ru.ru_utime + ru.ru_stime)
            print(f"  same build in a fresh process (start-up included): {time.perf_counter() - t:.2f} s wall "
                  f"/ {cpu:.2f} s CPU")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--annotations", type=Path, default=os.environ.get("VH_BENCH_COCO_ANNOTATIONS"))
    parser.add_argument("--workdir", type=Path, default=cache_dir() / "bench")
    parser.add_argument("--skip-reference", action="store_true", help="don't time the reference-style loop")
    parser.add_argument("--skip-gt", action="store_true")
    args = parser.parse_args()
    bench_scoring(args.skip_reference)
    if not args.skip_gt:
        bench_gt(args.annotations, args.workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
