"""Assemble the offline NLTK data root CHAIR needs (metrics.md §1.3).

    python -m vh_bench.setup_nltk [--dest DIR] [--no-download]

For each of punkt_tab, averaged_perceptron_tagger_eng and wordnet (+ lexnames), the first source
that provides a complete copy wins:
  1. a copy already present in one of NLTK's data paths (the destination itself included);
  2. `nltk.download`, only if the network answers within a few seconds (skipped by --no-download);
  3. WordNet only: Debian's /usr/share/wordnet (packages wordnet-base + wordnet-sense-index), plus
     `lexnames` from the source directory below;
  4. the source directory `$VH_BENCH_NLTK_SOURCE`, else `<shared>/nltk_data`.
Files are always COPIED (NLTK 3.10 rejects symlinks that leave its data roots), into a staging
directory that is renamed into place, so an interrupted run never leaves a half resource.
Re-running is cheap and changes nothing once the root is complete. Ends with the start-up checks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from vh_bench import nltk_env
from vh_bench.nltk_env import RESOURCES, TAGGER, WORDNET, Resource
from vh_bench.paths import shared_dir

DEBIAN_WORDNET = Path("/usr/share/wordnet")
LEXNAMES_IN_SOURCE = "corpora/wordnet_extra/lexnames"
NETWORK_TIMEOUT_S = 3.0


def source_dir() -> Path:
    env = os.environ.get("VH_BENCH_NLTK_SOURCE")
    return Path(env).resolve() if env else shared_dir() / "nltk_data"


def _valid(root: Path, res: Resource) -> bool:
    """A complete, correct copy of `res` under data root `root`."""
    if nltk_env.missing_files(root, res):
        return False
    return res is not TAGGER or nltk_env.tagger_weights_ok(root)


def _copy_regular_files(src: Path, dst: Path) -> int:
    n = 0
    for f in sorted(src.iterdir()):
        if f.is_file():  # follows symlinks: we copy the content, never the link
            shutil.copyfile(f, dst / f.name)
            n += 1
    return n


def _install(dest: Path, res: Resource, fill: Callable[[Path], object]) -> bool:
    """Fill a staging dir for `res`, validate it, then swap it into `dest` (no half resources)."""
    final = dest / res.subdir
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        fill(staging)
        ok = all((staging / f).is_file() and not (staging / f).is_symlink() for f in res.files)
        if ok and res is TAGGER:
            ok = nltk_env.file_sha256(staging / TAGGER.files[0]) == nltk_env.TAGGER_WEIGHTS_SHA256
        if not ok:
            return False
        staging.chmod(0o755)  # mkdtemp makes it 0700
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        return True
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _from_existing_paths(dest: Path, res: Resource, report: list[str]) -> bool:
    import nltk

    for p in nltk.data.path:
        root = Path(p)
        if not root.is_dir() or root.resolve() == dest.resolve():
            continue
        if _valid(root, res):
            src = root / res.subdir
            if _install(dest, res, lambda d: _copy_regular_files(src, d)):
                report.append(f"{res.name}: copied from NLTK data path {src}")
                return True
        zipped = root / (res.subdir.split("/")[0]) / f"{res.name}.zip"
        if zipped.is_file() and _install(dest, res, lambda d: _unzip_into(zipped, res, d)):
            report.append(f"{res.name}: extracted from {zipped}")
            return True
    return False


def _unzip_into(zipped: Path, res: Resource, staging: Path) -> None:
    """Copy the files of `res.subdir` out of an NLTK package zip (e.g. wordnet.zip → wordnet/…)."""
    inner = "/".join(res.subdir.split("/")[1:]) + "/"  # path inside the zip, e.g. "wordnet/"
    with zipfile.ZipFile(zipped) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(inner):
                continue
            rel = info.filename[len(inner):]
            if "/" in rel or not rel:
                continue
            with zf.open(info) as src, open(staging / rel, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _network_ok() -> bool:
    try:
        from nltk.downloader import Downloader

        host = urlparse(Downloader.DEFAULT_URL).hostname or "raw.githubusercontent.com"
        with socket.create_connection((host, 443), timeout=NETWORK_TIMEOUT_S):
            return True
    except OSError:
        return False


def _from_download(dest: Path, res: Resource, report: list[str]) -> bool:
    import nltk

    tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=dest))
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30.0)  # nltk's urlopen has no timeout of its own
    try:
        try:
            ok = nltk.download(res.name, download_dir=str(tmp), quiet=True, raise_on_error=True)
        except Exception as exc:  # any network/parse failure just means "try the next source"
            report.append(f"{res.name}: download failed ({type(exc).__name__}: {exc})")
            return False
        if not ok:
            return False
        src = tmp / res.subdir
        if not src.is_dir():
            zipped = tmp / res.subdir.split("/")[0] / f"{res.name}.zip"
            installed = zipped.is_file() and _install(dest, res, lambda d: _unzip_into(zipped, res, d))
        else:
            installed = _install(dest, res, lambda d: _copy_regular_files(src, d))
        if installed:
            report.append(f"{res.name}: downloaded with nltk.download")
        return installed
    finally:
        socket.setdefaulttimeout(old_timeout)
        shutil.rmtree(tmp, ignore_errors=True)


def _from_debian(dest: Path, res: Resource, source: Path, report: list[str]) -> bool:
    if res is not WORDNET or not (DEBIAN_WORDNET / "index.sense").is_file():
        return False
    lexnames = source / LEXNAMES_IN_SOURCE
    if not lexnames.is_file():
        report.append(f"wordnet: Debian files present but lexnames not found at {lexnames}")
        return False

    def fill(d: Path) -> None:
        _copy_regular_files(DEBIAN_WORDNET, d)  # top-level regular files = the packages' data files
        shutil.copyfile(lexnames, d / "lexnames")

    if _install(dest, res, fill):
        report.append(f"wordnet: copied from {DEBIAN_WORDNET} + lexnames from {lexnames}")
        return True
    return False


def _from_source(dest: Path, res: Resource, source: Path, report: list[str]) -> bool:
    src = source / res.subdir
    if src.is_dir() and _install(dest, res, lambda d: _copy_regular_files(src, d)):
        report.append(f"{res.name}: copied from {src}")
        return True
    return False


def setup(dest: Path, *, download: bool = True, source: Path | None = None) -> list[str]:
    """Make `dest` a complete NLTK data root; returns one line per action. Raises if it can't."""
    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    source = source or source_dir()
    report: list[str] = []
    net: bool | None = None
    for res in RESOURCES:
        if _valid(dest, res):
            report.append(f"{res.name}: already present in {dest / res.subdir}")
            continue
        if _from_existing_paths(dest, res, report):
            continue
        if download:
            if net is None:
                net = _network_ok()
                if not net:
                    report.append("network unreachable: skipping nltk.download")
            if net and _from_download(dest, res, report):
                continue
        if _from_debian(dest, res, source, report) or _from_source(dest, res, source, report):
            continue
        raise nltk_env.NltkDataError(
            f"could not assemble NLTK resource {res.name} into {dest} (looked in NLTK data paths, "
            f"{'nltk.download, ' if download else ''}{DEBIAN_WORDNET} and {source}); "
            f"set VH_BENCH_NLTK_SOURCE to a folder holding {res.subdir}/"
        )
    nltk_env.ensure_nltk(dest)
    report.append(f"start-up checks passed; data root {dest}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vh_bench.setup_nltk", description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None,
                        help="data root to fill (default: $VH_BENCH_NLTK_DATA or <cache>/nltk_data)")
    parser.add_argument("--source", type=Path, default=None,
                        help="folder holding the shared NLTK files (default: $VH_BENCH_NLTK_SOURCE "
                             "or <shared>/nltk_data)")
    parser.add_argument("--no-download", action="store_true", help="never try nltk.download")
    args = parser.parse_args(argv)
    dest = args.dest or nltk_env.default_data_root()
    try:
        lines = setup(dest, download=not args.no_download, source=args.source)
    except nltk_env.NltkDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
