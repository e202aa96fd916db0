"""Score a run in a worker process that loads the scorer's resources while the model generates.

Loading NLTK's tagger and WordNet and the CHAIR ground truth takes seconds of pure Python. In a
thread it would hold the GIL against the timed decode loop and slow every method's first samples
(measured: 5x on the tiny model), so it runs in a separate process instead: it starts with the run,
builds its own copy of the dataset from the resolved config, warms it up, and scores the sample
lines when generation is done. If the worker cannot start or dies, scoring runs in-process.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from vh_bench.data.base import Dataset

log = logging.getLogger(__name__)

_DATASET: Any = None  # the worker process's dataset


def _watch_parent(parent_pid: int) -> None:
    """In the worker, first thing: exit when the run's process is gone. A SIGKILLed or OOM-killed
    parent cannot shut the pool down, and an orphaned worker would hold its memory (the NLTK
    tagger, the ground truth) until killed by hand; with it gone, the resource tracker exits too."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="vh_bench-parent-watch", daemon=True).start()


def _init(dataset_cfg: dict[str, Any]) -> None:
    """In the worker: build the dataset and load what scoring needs. Failures are left for
    `score` to report, with the same message an in-process scorer would give."""
    global _DATASET
    from hydra.utils import instantiate

    import vh_bench.config  # noqa: F401 - registers the config resolvers

    _DATASET = instantiate(dataset_cfg, _convert_="all")
    try:
        _DATASET.warm_up()
    except Exception as exc:  # noqa: BLE001
        log.debug("scoring warm-up failed (scoring will retry): %s", exc)


def _score(rows: list[dict[str, Any]], selected: set[str]) -> dict[str, Any]:
    return _DATASET.score(rows, selected=selected)


class ScoringWorker:
    """`score(rows, selected)` as the dataset would, with its resources loaded ahead of time."""

    def __init__(self, dataset: Dataset, dataset_cfg: dict[str, Any], *, enabled: bool = True) -> None:
        self.dataset = dataset
        self._pool: ProcessPoolExecutor | None = None
        self._ready: Future | None = None
        if not enabled or not callable(getattr(dataset, "warm_up", None)):
            return
        try:
            # spawn, not fork: the parent holds torch's thread pools, which do not survive a fork.
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )
            self._ready = self._pool.submit(_init, dataset_cfg)
        except (OSError, RuntimeError) as exc:
            log.warning("scoring worker not started (%s); scoring in-process", exc)
            self._pool = None

    def score(self, rows: list[dict[str, Any]], selected: set[str]) -> dict[str, Any]:
        if self._pool is not None and self._ready is not None:
            try:
                self._ready.result()
            except Exception as exc:  # noqa: BLE001 - e.g. the worker died; the parent can still score
                log.warning("scoring worker unavailable (%s); scoring in-process", exc)
            else:
                return self._pool.submit(_score, rows, selected).result()
        return self.dataset.score(rows, selected=selected)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "ScoringWorker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
