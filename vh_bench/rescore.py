"""`python -m vh_bench.score run <run_dir>`: a run's metrics again, from its directory alone.

The run's resolved config (results.json, else config.yaml) rebuilds its dataset without loading a
model or importing torch; the dataset selects the same samples (checked against the recorded
selection digest), the sample lines are read from the run's `samples*.jsonl`, and a captioning
run is scored against the very ground-truth file it recorded (path and sha256), so the metrics come
out equal to results.json's, key for key. Anything that would make them differ silently — a
changed or missing ground truth, other question files, another sample selection — is an error
naming what changed.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_bench.data.base import select_samples, selection_digest
from vh_bench.store import RunStore, atomic_write_json, file_sha256

log = logging.getLogger(__name__)


class RescoreError(ValueError):
    """The run directory cannot be rescored as it was scored (one line: what differs, what to do)."""


@dataclass
class Rescore:
    run_dir: Path
    metrics: dict[str, Any]
    recorded: dict[str, Any] | None  # results.json's metrics, None if the run was never scored
    ground_truth: dict[str, Any] | None  # provenance of the GT scored against (captioning runs)
    n_rows: int
    differences: list[str] = field(default_factory=list)

    @property
    def reproduced(self) -> bool | None:
        return None if self.recorded is None else not self.differences

    def summary(self) -> dict[str, Any]:
        return {
            "metric": "run",
            "run_dir": str(self.run_dir),
            "reproduced": self.reproduced,
            "differences": self.differences,
            "n_rows": self.n_rows,
            "ground_truth": self.ground_truth,
            "metrics": self.metrics,
        }


def _plain(obj: Any) -> Any:
    """As results.json stores it (atomic_write_json's `default=str`), so values compare like for like."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


def _leaves(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b  # 1 == 1.0 == True would hide a changed count or flag


# Where a file lives is not what it holds (its sha256 is compared): a run directory moved to another
# machine, whose ground truth was rebuilt elsewhere, still reproduces.
LOCATION_KEYS = ("gt_cache.path", "objects_file.path")


def differences(new: dict[str, Any], old: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every leaf that differs (absent on one side included), file locations aside."""
    a, b = _leaves(_plain(new)), _leaves(_plain(old))
    out = []
    for key in sorted(a.keys() | b.keys()):
        if key.endswith(LOCATION_KEYS):
            continue
        if key not in a or key not in b or not _same(a[key], b[key]):
            out.append(f"{key}: {b.get(key, '<absent>')!r} -> {a.get(key, '<absent>')!r}")
    return out


def read_run(run_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(results.json or None, the resolved config) of a run directory."""
    if not run_dir.is_dir():
        raise RescoreError(f"run directory {run_dir} not found")
    results = None
    path = run_dir / "results.json"
    if path.is_file():
        try:
            results = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RescoreError(f"{path}: not valid JSON ({exc})") from None
    if results is not None and isinstance(results.get("config"), dict):
        return results, results["config"]
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise RescoreError(f"{run_dir} has neither results.json nor config.yaml: not a vh_bench run directory")
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(cfg_path), resolve=True)
    assert isinstance(cfg, dict)
    return results, cfg


def _build_dataset(cfg: dict[str, Any]) -> Any:
    from hydra.utils import instantiate

    import vh_bench.config  # noqa: F401 - registers the resolvers an unresolved config.yaml may use

    try:
        return instantiate(cfg["dataset"], _convert_="all")
    except Exception as exc:  # noqa: BLE001 - Hydra wraps the dataset's own errors
        cause = exc.__cause__ or exc
        raise RescoreError(f"cannot rebuild the run's dataset: {cause}".splitlines()[0]) from exc


def _check_data(dataset: Any, results: dict[str, Any]) -> None:
    """The dataset's identity (what selects samples and prompts: question/annotation sha256s,
    generator settings) must be the one the run recorded under `data`."""
    recorded = results.get("data") or {}
    for key, value in _plain(dataset.identity()).items():
        if key in recorded and recorded[key] != value:
            raise RescoreError(
                f"the run's dataset changed since it was scored: data.{key} was {recorded[key]!r}, is now {value!r}"
            )


def _recorded_gt(results: dict[str, Any] | None) -> dict[str, Any] | None:
    chair = ((results or {}).get("metrics") or {}).get("chair") or {}
    return (chair.get("config") or {}).get("gt_cache")


def _ground_truth(dataset: Any, recorded: dict[str, Any] | None) -> Any:
    """The GT the run scored against: its recorded file (sha256 checked), else the dataset's own,
    which must then hash to the recorded sha256."""
    from vh_bench.metrics.chair_gt import GroundTruth, load_ground_truth

    if recorded is None:
        return dataset.ground_truth()
    want = recorded.get("sha256")
    path = recorded.get("path")
    if path and Path(path).is_file():
        got = file_sha256(path)
        if got != want:
            raise RescoreError(
                f"ground truth {path} changed since the run (sha256 {got[:12]}…, recorded {str(want)[:12]}…); "
                "restore it or rescore with `score chair --gt`"
            )
        loaded = load_ground_truth(path, image_ids=dataset.gt_image_ids())
        # The recorded name ("built:<key>" for a built GT) and dialect, so the provenance in the
        # rescored metrics is the run's, not the cache file's bare name.
        return GroundTruth(loaded.objects, recorded.get("name") or loaded.name, loaded.sha256,
                           recorded.get("built_with", loaded.built_with), loaded.path)
    gt = dataset.ground_truth()
    if gt.sha256 != want:
        where = f"recorded file {path} is gone and " if path else ""
        raise RescoreError(
            f"{where}the dataset's ground truth {gt.name} (sha256 {gt.sha256[:12]}…) is not the one the run used "
            f"({recorded.get('name')}, sha256 {str(want)[:12]}…)"
        )
    return gt


def rescore_run(run_dir: Path | str) -> Rescore:
    """Score the run in `run_dir` again from its own files (see the module docstring)."""
    run_dir = Path(run_dir).resolve()
    results, cfg = read_run(run_dir)
    dataset = _build_dataset(cfg)
    if results is not None:
        _check_data(dataset, results)
    limit = (cfg.get("runtime") or {}).get("limit")
    wanted = {s.sample_id for s in select_samples(dataset, limit)}
    recorded_sel = (results or {}).get("selection")
    if recorded_sel is not None and recorded_sel != selection_digest(wanted):
        raise RescoreError(
            f"the dataset now selects {len(wanted)} samples that are not the {recorded_sel.get('n')} the run "
            "recorded (selection sha256 differs); the run's data or runtime.limit changed"
        )
    rows = sorted((r for r in RunStore(run_dir).rows() if r["sample_id"] in wanted), key=lambda r: r["sample_id"])  # as runner.score
    gt_prov = None
    if callable(getattr(dataset, "use_ground_truth", None)):
        gt = _ground_truth(dataset, _recorded_gt(results))
        dataset.use_ground_truth(gt)
        gt_prov = gt.provenance()
    metrics = dataset.score(rows, selected=wanted) if rows else {}
    recorded = None if results is None else results.get("metrics", {})
    out = Rescore(run_dir, _plain(metrics), recorded, gt_prov, len(rows))
    if recorded is not None:
        out.differences = differences(metrics, recorded)
    return out


def write_back(res: Rescore) -> Path:
    """Replace results.json's metrics by the rescored ones (after a metric fix), noting when and why."""
    import time

    path = res.run_dir / "results.json"
    results = json.loads(path.read_text(encoding="utf-8"))
    results["metrics"] = res.metrics
    results.setdefault("rescored", []).append(
        {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "by": "python -m vh_bench.score run", "n_differences": len(res.differences)}
    )
    atomic_write_json(path, results)
    return path
