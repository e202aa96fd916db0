"""Run directories named by content (design.md): `<results>/runs/<model>/<dataset>/<method>/<fp8>/`.

Holds `config.yaml`, `manifest.json`, `samples*.jsonl` (one JSON line per sample, flushed as
written) and `results.json` (written atomically). Same command → same directory → resume.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def file_sha256(path: os.PathLike | str) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks: the one file hash for provenance and caches."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary sibling, fsync, rename: readers never see half a file, and a full disk
    leaves the previous version in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_jsonl_tolerant(path: Path) -> Iterator[dict[str, Any]]:
    """Lines of a sample file; a torn last line (killed mid-write) is skipped, not fatal."""
    with path.open(encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i >= len(lines) - 2:  # the last non-empty line: a torn write, redone on resume
                log.warning("%s: dropping torn last line", path)
                continue
            raise ValueError(f"{path}:{i + 1}: malformed sample line") from None


class RunStore:
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def results_path(self) -> Path:
        return self.dir / "results.json"

    def sample_files(self) -> list[Path]:
        return sorted(self.dir.glob("samples*.jsonl"))

    def rows(self) -> list[dict[str, Any]]:
        """All sample lines of every shard file, one per sample id (first complete line wins)."""
        seen: dict[str, dict[str, Any]] = {}
        for f in self.sample_files():
            for row in read_jsonl_tolerant(f):
                seen.setdefault(str(row["sample_id"]), row)
        return list(seen.values())

    def done_ids(self) -> set[str]:
        return {str(r["sample_id"]) for r in self.rows()}

    def open_samples(self, shard: str = "") -> "SampleWriter":
        name = f"samples{('.' + shard) if shard else ''}.jsonl"
        return SampleWriter(self.dir / name)


class SampleWriter:
    """Appends one line per sample and flushes it, so a crash loses at most the sample in flight."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._repair_torn_tail()
        self._fh: IO[str] = path.open("a", encoding="utf-8")

    def _repair_torn_tail(self) -> None:
        # A line cut by a kill has no trailing newline: drop it so the next append starts clean.
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":  # the usual case: only the last byte is read
                return
        cut = self.path.read_bytes().rfind(b"\n") + 1
        with self.path.open("r+b") as fh:
            fh.truncate(cut)

    def write(self, row: dict[str, Any]) -> None:
        # Flushed to the OS per line: a killed or preempted process loses nothing it wrote. The
        # fsync (which also survives a machine crash) is paid once, at close, not per sample.
        self._fh.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def __enter__(self) -> "SampleWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
