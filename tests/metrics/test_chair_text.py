"""CHAIR text processing: metrics.md §6 items 1-5 (environment, synonyms, double words,
caption_to_words, singularizer) and the offline NLTK set-up of §1.3."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from vh_bench.models.tiny_vocab import COCO_CATEGORIES

from tests.shared_data import shared_path
from vh_bench import nltk_env, setup_nltk
from vh_bench.metrics.chair_words import (
    DOUBLE_WORDS,
    caption_to_words,
    load_synonyms,
    merge_double_words,
    singularize,
)

pytestmark = pytest.mark.usefixtures("chair_no_download", "chair_synonyms", "chair_nltk_root")

COCO_NAMES = list(COCO_CATEGORIES)  # the 80 COCO category names, in COCO's order


# --- §6.1 environment --------------------------------------------------------------------------

def test_startup_checks_pass_and_tagger_sha(chair_nltk_root):
    import nltk
    from nltk.stem import WordNetLemmatizer

    assert nltk_env.ensure_nltk(chair_nltk_root) == chair_nltk_root
    assert Path(nltk.data.path[0]) == chair_nltk_root
    weights = chair_nltk_root / nltk_env.TAGGER.subdir / nltk_env.TAGGER.files[0]
    assert weights.stat().st_size == 5_677_744
    assert nltk_env.file_sha256(weights) == nltk_env.TAGGER_WEIGHTS_SHA256
    # the §1.3 sanity checks, asserted here too so a silently weakened check cannot pass
    assert nltk.word_tokenize("a man. a dog.") == ["a", "man", ".", "a", "dog", "."]
    assert nltk.pos_tag(["a", "man"]) == [("a", "DT"), ("man", "NN")]
    wnl = WordNetLemmatizer()
    assert [wnl.lemmatize(w, p) for w, p in [("skiing", "v"), ("men", "n"), ("vases", "n"), ("buses", "n")]] == [
        "ski", "men", "vas", "bus"]
    # nothing in the data root is a symlink (NLTK 3.10 rejects links leaving its roots)
    assert not [p for p in chair_nltk_root.rglob("*") if p.is_symlink()]


def test_download_is_forbidden():
    import nltk

    with pytest.raises(AssertionError, match="nltk.download called"):
        nltk.download("wordnet")


@pytest.mark.parametrize("victim", ["punkt_tab", "averaged_perceptron_tagger_eng", "wordnet"])
def test_missing_resource_is_one_clear_line(chair_restore_nltk_root, tmp_path, victim):
    root = tmp_path / "nltk_data"
    shutil.copytree(chair_restore_nltk_root, root)
    res = {r.name: r for r in nltk_env.RESOURCES}[victim]
    (root / res.subdir / res.files[0]).unlink()
    with pytest.raises(nltk_env.NltkDataError) as err:
        nltk_env.ensure_nltk(root)
    msg = str(err.value)
    assert "\n" not in msg and victim in msg and "python -m vh_bench.setup_nltk" in msg


def test_corrupt_tagger_weights_rejected(chair_restore_nltk_root, tmp_path):
    root = tmp_path / "nltk_data"
    shutil.copytree(chair_restore_nltk_root, root)
    weights = root / nltk_env.TAGGER.subdir / nltk_env.TAGGER.files[0]
    weights.write_bytes(weights.read_bytes()[:-1] + b" ")
    with pytest.raises(nltk_env.NltkDataError, match="sha256"):
        nltk_env.ensure_nltk(root)


def test_setup_nltk_copies_offline_and_is_idempotent(chair_restore_nltk_root, tmp_path, monkeypatch):
    source = shared_path("nltk_data")
    # pretend no NLTK data path holds anything and the network is up; nltk.download still raises
    # (chair_no_download), which must be caught and reported, then the offline sources used.
    monkeypatch.setattr("nltk.data.path", [])
    monkeypatch.setattr(setup_nltk, "_network_ok", lambda: True)
    dest = tmp_path / "root"
    report = setup_nltk.setup(dest, download=True, source=source)
    assert any("download failed" in line for line in report)
    assert any(line.startswith("wordnet: copied from") for line in report)
    for res in nltk_env.RESOURCES:
        assert not nltk_env.missing_files(dest, res)
    wn = dest / "corpora" / "wordnet"
    assert (wn / "lexnames").read_text().count("\n") == 45
    assert not [p for p in dest.rglob("*") if p.is_symlink()]
    if Path("/usr/share/wordnet/index.sense").is_file():
        assert (wn / "index.sense").stat().st_size == Path("/usr/share/wordnet/index.sense").stat().st_size
    again = setup_nltk.setup(dest, download=False, source=source)
    assert all("already present" in line for line in again[:3])


def test_setup_nltk_reuses_existing_nltk_paths(chair_restore_nltk_root, tmp_path, monkeypatch):
    """Step 1 of the set-up: copies (or unzips, as nltk.download leaves them) from NLTK's paths."""
    import zipfile

    elsewhere = tmp_path / "user_nltk_data"
    shutil.copytree(chair_restore_nltk_root / "taggers", elsewhere / "taggers")
    shutil.copytree(chair_restore_nltk_root / "corpora", elsewhere / "corpora")
    (elsewhere / "tokenizers").mkdir()
    with zipfile.ZipFile(elsewhere / "tokenizers" / "punkt_tab.zip", "w") as zf:
        for f in (chair_restore_nltk_root / nltk_env.PUNKT_TAB.subdir).iterdir():
            zf.write(f, f"punkt_tab/english/{f.name}")
        zf.writestr("punkt_tab/german/abbrev_types.txt", "")  # other languages are ignored
    monkeypatch.setattr("nltk.data.path", [str(elsewhere)])
    dest = tmp_path / "root"
    report = setup_nltk.setup(dest, download=False, source=tmp_path / "no-source")
    assert report[0].startswith("punkt_tab: extracted from") and "punkt_tab.zip" in report[0]
    assert report[1].startswith("averaged_perceptron_tagger_eng: copied from NLTK data path")
    assert report[2].startswith("wordnet: copied from NLTK data path")
    assert sorted(p.name for p in (dest / nltk_env.PUNKT_TAB.subdir).iterdir()) == sorted(nltk_env.PUNKT_TAB.files)


def test_setup_nltk_fails_clearly_without_sources(chair_restore_nltk_root, tmp_path, monkeypatch):
    monkeypatch.setattr("nltk.data.path", [])
    monkeypatch.setattr(setup_nltk, "DEBIAN_WORDNET", tmp_path / "no-debian")
    with pytest.raises(nltk_env.NltkDataError, match="punkt_tab") as err:
        setup_nltk.setup(tmp_path / "root", download=False, source=tmp_path / "empty")
    assert "\n" not in str(err.value)


# --- §6.2 synonym table ------------------------------------------------------------------------

def test_synonym_table():
    syn = load_synonyms(shared_path("data/chair/synonyms.txt"))
    assert list(syn.nodes) == COCO_NAMES
    assert len(syn.pieces) == 416 and len(set(syn.pieces)) == 403
    assert len(syn.vocabulary) == 403
    for broken in (" motor bike", " cheesecake", "iPhone"):
        assert broken in syn.node_of
    assert syn.node_of[" motor bike"] == "motorcycle" and syn.node_of["iPhone"] == "cell phone"
    # ...and they never match: captions are lower-cased and tokens have no leading space
    assert caption_to_words("an iPhone and a cheesecake.").words == ()
    assert syn.node_of["bow"] == "tie" and syn.node_of["desk"] == "dining table"
    assert all(syn.node_of[n] == n for n in syn.nodes)


# --- §6.3 double words -------------------------------------------------------------------------

def test_double_word_table_exact():
    animals = ["bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "animal", "cub"]
    selfs = ["motor bike", "motor cycle", "air plane", "traffic light", "street light", "traffic signal",
             "stop light", "fire hydrant", "stop sign", "parking meter", "suit case", "sports ball",
             "baseball bat", "baseball glove", "tennis racket", "wine glass", "hot dog", "cell phone",
             "mobile phone", "teddy bear", "hair drier", "potted plant", "laptop computer", "stove top oven",
             "home plate", "train track"]
    expected = {k: k for k in selfs}
    expected.update({f"{age} {a}": a for a in animals for age in ("baby", "adult")})
    expected.update({"bow tie": "tie", "passenger jet": "jet", "passenger train": "train",
                     "toilet seat": "toilet", "wine glas": "wine glass"})
    assert len(expected) == 55
    assert DOUBLE_WORDS == expected


def test_double_word_merge_is_greedy():
    assert merge_double_words(["baby", "teddy", "bear"]) == (["baby", "teddy bear"], [0, 1])
    assert merge_double_words(["a", "hot", "dog", "dog"]) == (["a", "hot dog", "dog"], [0, 1, 3])
    assert merge_double_words([]) == ([], [])


# --- §6.4 caption_to_words (§1.5 worked examples) ----------------------------------------------

WORKED = [
    ("There are people skiing near a bus, two vases and a wine glass on the dining table.", "opera", 18,
     ["people", "ski", "bus", "wine glass", "table"], ["person", "skis", "bus", "wine glass", "dining table"]),
    ("There are people skiing near a bus, two vases and a wine glass on the dining table.", "original", 18,
     ["person", "vase", "wine glass", "table"], ["person", "vase", "wine glass", "dining table"]),
    ("A baby elephant walks past a passenger train on the train tracks.", "opera", 10,
     ["elephant", "train"], ["elephant", "train"]),
    ("A baby elephant walks past a passenger train on the train tracks.", "original", 10,
     ["elephant", "train"], ["elephant", "train"]),
    ("The toilet seat is up and a seat stands near the toilet.", "opera", 12, ["toilet", "toilet"], ["toilet", "toilet"]),
    ("The toilet seat is up and a seat stands near the toilet.", "original", 12, ["toilet", "toilet"], ["toilet", "toilet"]),
    ("A man on a motor bike holds a teddy bear wearing a bow tie.", "opera", 12,
     ["man", "teddy bear", "tie"], ["person", "teddy bear", "tie"]),
    ("A man on a motor bike holds a teddy bear wearing a bow tie.", "original", 12,
     ["man", "teddy bear", "tie"], ["person", "teddy bear", "tie"]),
    ("Two men are seated at a table with hot dogs and an iPhone.", "opera", 13,
     ["seat", "table", "hot dog"], ["chair", "dining table", "hot dog"]),
    ("Two men are seated at a table with hot dogs and an iPhone.", "original", 13,
     ["man", "table", "hot dog"], ["person", "dining table", "hot dog"]),
    ("A man with skis. Tennis rackets lie on the table.", "opera", 11,
     ["man", "ski", "tennis racket", "table"], ["person", "skis", "tennis racket", "dining table"]),
    ("A man with skis. Tennis rackets lie on the table.", "original", 12,
     ["man", "ski", "racket", "table"], ["person", "skis", "tennis racket", "dining table"]),
]


@pytest.mark.parametrize(("caption", "dialect", "n_merged", "words", "nodes"), WORKED)
def test_worked_examples(caption, dialect, n_merged, words, nodes):
    cw = caption_to_words(caption, dialect)
    assert len(cw.merged) == n_merged
    assert list(cw.words) == words
    assert list(cw.node_words) == nodes
    assert len(cw.positions) == len(cw.words)


def test_opera_merged_list_of_first_example():
    cw = caption_to_words(WORKED[0][0], "opera")
    assert list(cw.merged) == ["there", "be", "people", "ski", "near", "a", "bus", ",", "two", "vas", "and",
                               "a", "wine glass", "on", "the", "dining", "table", "."]
    assert cw.positions == (2, 3, 6, 12, 17)  # start indices in the unmerged token list


@pytest.mark.parametrize("dialect", ["opera", "original"])
@pytest.mark.parametrize(("caption", "nodes"), [
    ("a motor bike.", []),                      # " motor bike" has a leading space: no object at all
    ("a baby bear cub.", ["bear"]),
    ("a cell-phone and a hot-dog", []),         # hyphenated tokens match nothing
    ("the seat of the toilet is white.", ["toilet"]),   # non-adjacent seat dropped (step 5)
    ("a seat next to a chair.", ["chair", "chair"]),    # no toilet: seat stays a chair
    ("a baby animal.", []),
    ("the train tracks.", []),
    ("", []),
])
def test_caption_to_words_edge_cases(caption, nodes, dialect):
    assert list(caption_to_words(caption, dialect).node_words) == nodes


def test_toilet_seat_rule_keeps_merged_and_positions_aligned():
    cw = caption_to_words("A seat is next to the toilet.", "opera")
    assert "seat" in cw.merged and cw.words == ("toilet",)
    assert cw.merged[cw.positions[0]] == "toilet"  # aligned (the reference misaligns here)


@pytest.mark.parametrize(("caption", "opera", "original"), [
    ("a bus.", ["bus"], []),                 # pattern: bu
    ("two men.", [], ["person"]),            # wordnet keeps men
    ("two vases.", [], ["vase"]),            # wordnet: vas
    ("he is skiing.", ["skis"], []),
    ("he is skateboarding.", ["skateboard"], []),
])
def test_dialect_artefacts(caption, opera, original):
    assert list(caption_to_words(caption, "opera").node_words) == opera
    assert list(caption_to_words(caption, "original").node_words) == original


def test_unknown_dialect():
    with pytest.raises(ValueError, match="unknown CHAIR dialect"):
        caption_to_words("a dog", "spacy")


# --- §6.5 singularizer -------------------------------------------------------------------------

def test_patternlite_singularize():
    assert [singularize(w) for w in ["bus", "glass", "people", "men", "tennis"]] == [
        "bu", "glas", "person", "man", "tenni"]
    assert [singularize(w) for w in ["airbuses", "minibuses", "collies", "doggies", "as"]] == [
        "airbus", "minibus", "collies", "doggies", "as"]


def test_pattern_en_not_imported():
    import sys

    singularize("dogs")
    assert "pattern.en" not in sys.modules  # its __init__ would call nltk.download


@pytest.mark.skipif(importlib.util.find_spec("textblob") is None, reason="textblob not installed")
def test_textblob_differences():
    from textblob.en.inflect import singularize as tb

    assert [tb(w) for w in ["airbuses", "minibuses", "collies", "doggies", "as"]] == [
        "bus", "bus", "collie", "doggie", "a"]
