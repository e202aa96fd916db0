"""CHAIR fixtures (metrics.md §6 items 1-11). All are opt-in (`chair_*` names, none autouse),
so the other metric tests in this folder are unaffected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.shared_data import shared_path


class NltkDownloadCalled(AssertionError):
    pass


def _forbidden_download(*args, **kwargs):
    raise NltkDownloadCalled(f"nltk.download called during tests (args={args!r})")


@pytest.fixture(scope="session")
def chair_no_download():
    """§6.1: nltk.download must never be called; any call fails the test loudly."""
    import nltk
    import nltk.downloader

    mp = pytest.MonkeyPatch()
    mp.setattr(nltk, "download", _forbidden_download)
    mp.setattr(nltk.downloader, "download", _forbidden_download)
    mp.setattr(nltk.downloader.Downloader, "download", _forbidden_download)
    yield
    mp.undo()


@pytest.fixture(scope="session")
def chair_nltk_root(chair_no_download, tmp_path_factory) -> Path:
    """The project's NLTK data root; assembled offline into a temp dir if the default one is absent."""
    from vh_bench import nltk_env, setup_nltk

    try:
        return nltk_env.ensure_nltk()
    except nltk_env.NltkDataError:
        source = shared_path("nltk_data")
        root = tmp_path_factory.mktemp("nltk_data")
        setup_nltk.setup(root, download=False, source=source)
        return nltk_env.ensure_nltk(root)


@pytest.fixture
def chair_restore_nltk_root(chair_nltk_root):
    """Tests that set up other data roots put the session root back first afterwards."""
    yield chair_nltk_root
    from vh_bench import nltk_env

    nltk_env.ensure_nltk(chair_nltk_root)


@pytest.fixture(scope="session")
def chair_gt_pattern(chair_no_download):
    from vh_bench.metrics.chair_gt import load_ground_truth

    return load_ground_truth(shared_path("data/chair/gt_objects_pattern.json.gz"))


@pytest.fixture(scope="session")
def chair_gt_nltk(chair_no_download):
    from vh_bench.metrics.chair_gt import load_ground_truth

    return load_ground_truth(shared_path("data/chair/gt_objects_nltk.json.gz"))


@pytest.fixture(scope="session")
def chair_gts(chair_gt_pattern, chair_gt_nltk) -> dict:
    return {"pattern": chair_gt_pattern, "nltk": chair_gt_nltk}


@pytest.fixture(scope="session")
def chair_golden_dir() -> Path:
    return shared_path("data/chair/golden/opera")


@pytest.fixture(scope="session")
def chair_expected(chair_golden_dir) -> dict:
    return json.loads((chair_golden_dir / "expected.json").read_text())


@pytest.fixture(scope="session")
def chair_synonyms() -> Path:
    """Every CHAIR test reads the shared synonym table (through the default path)."""
    return shared_path("data/chair/synonyms.txt")
