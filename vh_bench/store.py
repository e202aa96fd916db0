"""Run directories named by content (design.md): `<results>/runs/<model>/<dataset>/<method>/<fp8>/`.

Holds `config.yaml`, `manifest.json`, `samples*.jsonl` (one JSON line per sample, flushed as
written) and `results.json` (written atomically). Same command → same directory → resume.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vh_bench.errors import RunError

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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, rename: readers never see half a file, and a full disk
    leaves the previous version in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@dataclass(frozen=True)
class BadLine:
    """A line of a samples file that is not a sample: kept aside, never scored."""

    path: Path
    lineno: int
    raw: bytes
    problem: str


def line_problem(row: Any) -> str | None:
    """Why a parsed JSON line is not a sample line (None: it is one). Only what every task needs;
    the runner adds the dataset's own fields (`image_id`, `question_id`) through `accept`."""
    if not isinstance(row, dict):
        return f"a JSON {type(row).__name__}, not an object"
    sid = row.get("sample_id")
    if not isinstance(sid, str) or not sid:
        return "no sample_id" if sid is None else f"sample_id {sid!r} is not a string"
    if not isinstance(row.get("text"), str):
        return "no text string"
    if row.get("error") is not None and not isinstance(row["error"], str):
        return f"error {row['error']!r} is not a string or null"
    return None


Accept = Callable[[dict[str, Any]], "str | None"]


def read_sample_file(path: Path, accept: Accept | None = None) -> tuple[list[dict[str, Any]], list[BadLine]]:
    """(sample lines, bad lines) of one samples file. A torn last line (killed mid-write: no
    newline after it) is neither: the writer cuts it off and the sample is generated again."""
    with path.open("rb") as fh:
        lines = fh.read().split(b"\n")
    rows: list[dict[str, Any]] = []
    bad: list[BadLine] = []
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        if i == len(lines) - 1:  # after the last newline: a torn write
            log.warning("%s: dropping the torn last line (no newline; it is generated again)", path)
            continue
        try:
            row = json.loads(raw)
        except json.JSONDecodeError as exc:
            bad.append(BadLine(path, i + 1, raw, f"not JSON ({exc.msg})"))
            continue
        except UnicodeDecodeError:
            bad.append(BadLine(path, i + 1, raw, "not UTF-8"))
            continue
        problem = line_problem(row) or (accept(row) if accept is not None else None)
        if problem:
            bad.append(BadLine(path, i + 1, raw, problem))
        else:
            rows.append(row)
    return rows, bad


_WARNED: set[tuple[str, int, bytes]] = set()


def _warn_bad(line: BadLine, action: str) -> None:
    key = (str(line.path), line.lineno, line.raw)
    if key not in _WARNED:  # rows are read more than once per run: one warning per line
        _WARNED.add(key)
        log.warning("%s:%d: not a sample line (%s); %s", line.path, line.lineno, line.problem, action)


class RunLock:
    """An exclusive `flock` on a file of the run directory. The kernel drops it when the holder dies
    (SIGKILL, OOM killer, preemption), so a stale lock never blocks a resume."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, blocking: bool) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def holder(self) -> str:
        """What the holder wrote into the lock file (pid, host, start time), for the error line."""
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def note(self, text: str) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, text.encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        self.acquire(blocking=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def results_rank(results: dict[str, Any]) -> tuple[int, int]:
    """How much of the run a results.json covers: (samples asked for, sample lines scored)."""
    return int(results.get("n_samples") or 0), int(results.get("n_done") or 0)


class RunStore:
    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.accept: Accept | None = None  # the runner's dataset-specific line check
        self._held: dict[str, RunLock] = {}

    @property
    def results_path(self) -> Path:
        return self.dir / "results.json"

    def sample_files(self) -> list[Path]:
        return sorted(self.dir.glob("samples*.jsonl"))

    @staticmethod
    def sample_file_name(shard: str = "") -> str:
        return f"samples{('.' + shard) if shard else ''}.jsonl"

    def _lock_for(self, name: str) -> RunLock:
        return RunLock(self.dir / f".{name}.lock")

    def lock_samples(self, shard: str = "") -> None:
        """Take this shard's samples file for this process, or raise RunError naming the holder: two
        identical runs at once would each generate every sample. Held until `release`."""
        name = self.sample_file_name(shard)
        lock = self._lock_for(name)
        if not lock.acquire(blocking=False):
            raise RunError(
                f"another vh_bench process ({lock.holder()}) is running this run in {self.dir}"
                + (f" (shard {shard})" if shard else "")
                + "; wait for it to finish, or run another runtime.shard.index"
            )
        lock.note(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
        self._held[name] = lock

    def release(self) -> None:
        for lock in self._held.values():
            lock.release()
        self._held.clear()

    def results_lock(self) -> RunLock:
        """Held while the lines are read, scored and results.json written: shards finishing at once
        score one after the other, each seeing every line the others wrote."""
        return self._lock_for("results")

    def _read(self, path: Path) -> list[dict[str, Any]]:
        rows, bad = read_sample_file(path, self.accept)
        if bad:
            self._set_aside(path, bad)
        return rows

    def _set_aside(self, path: Path, bad: list[BadLine]) -> None:
        """Move bad lines to `<file>.rejected` (appended, byte for byte) when no process is
        appending to the file; otherwise only skip them. Their samples are generated again."""
        aside = path.with_name(path.name + ".rejected")
        held = self._held.get(path.name)
        lock = held or self._lock_for(path.name)
        if held is None and not lock.acquire(blocking=False):
            for line in bad:
                _warn_bad(line, "skipped (the file is being written by another process)")
            return
        try:
            _, bad = read_sample_file(path, self.accept)  # again, now that nobody appends
            data = path.read_bytes()
            if not bad:
                return
            with aside.open("ab") as fh:
                fh.writelines(line.raw + b"\n" for line in bad)
                fh.flush()
                os.fsync(fh.fileno())
            drop = {line.lineno for line in bad}
            lines = data.split(b"\n")
            kept = [raw for i, raw in enumerate(lines[:-1]) if i + 1 not in drop]
            atomic_write_bytes(path, b"".join(raw + b"\n" for raw in kept) + lines[-1])
            for line in bad:
                _warn_bad(line, f"set aside in {aside.name}; the sample is generated again")
        finally:
            if held is None:
                lock.release()

    def rows(self) -> list[dict[str, Any]]:
        """All sample lines of every shard file, one per sample id (first complete line wins)."""
        seen: dict[str, dict[str, Any]] = {}
        for f in self.sample_files():
            for row in self._read(f):
                seen.setdefault(row["sample_id"], row)
        return list(seen.values())

    def done_ids(self) -> set[str]:
        return {r["sample_id"] for r in self.rows()}

    def open_samples(self, shard: str = "") -> "SampleWriter":
        return SampleWriter(self.dir / self.sample_file_name(shard))

    def read_results(self) -> dict[str, Any] | None:
        try:
            old = json.loads(self.results_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # absent or unreadable: nothing to protect
        return old if isinstance(old, dict) else None

    def results_target(self, results: dict[str, Any], limit: int | None) -> Path | None:
        """Where these results go. results.json unless it already covers more of the run (more
        samples asked for, or more lines scored): then a `runtime.limit` run writes beside it,
        `results.limit-N.json`, and a shard that saw fewer lines writes nothing (call under
        `results_lock`)."""
        old = self.read_results()
        if old is None or results_rank(results) >= results_rank(old):
            return self.results_path
        if limit is not None and results_rank(results)[0] < results_rank(old)[0]:
            return self.dir / f"results.limit-{limit}.json"
        log.warning("%s already covers %d of %d lines; kept (this process saw %d)",
                    self.results_path, results_rank(old)[1], results_rank(old)[0], results_rank(results)[1])
        return None


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
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
        finally:
            self._fh.close()

    def __enter__(self) -> "SampleWriter":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
            return
        # Already failing (e.g. the disk is full): closing must not raise a second error on top.
        try:
            self.close()
        except OSError as err:
            log.debug("closing %s after an error: %s", self.path, err)
