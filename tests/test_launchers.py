"""Sweeps through Hydra's launcher plugins: a local 2-job multirun, and SLURM parameters mapped
into submitit (with the executor mocked, as Hydra's own plugin tests do)."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

from hydra.core.utils import JobReturn
from hydra.utils import instantiate

from tests.helpers import FAST, results_override, run_cli
from vh_bench.config import compose


def test_local_launcher_runs_a_two_job_multirun(tmp_path: Path) -> None:
    proc = run_cli(["-m", "hydra/launcher=local", *FAST, results_override(tmp_path), "runtime.limit=1", "generation=greedy,beam"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(tmp_path.glob("runs/tiny/demo/vanilla/*/results.json"))
    assert len(results) == 2
    strategies = sorted(json.loads(p.read_text())["generation"]["strategy"] for p in results)
    assert strategies == ["beam", "greedy"]
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout
    # The sweep callback collected both runs into one table.
    sweeps = [p.parent for p in (tmp_path / "multirun").rglob("multirun.yaml")]
    assert len(sweeps) == 1
    tables = "".join(p.read_text() for p in sweeps[0].glob("*.md"))
    assert "greedy" in tables and "beam" in tables


def test_slurm_launcher_maps_config_into_submitit(tmp_path: Path) -> None:
    cfg = compose(
        [
            "hydra/launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.account=proj42",
            "hydra.launcher.gpus_per_node=2",
            "hydra.launcher.timeout_min=90",
            f"hydra.sweep.dir={tmp_path}/sweep",
            results_override(tmp_path),
        ],
        return_hydra_config=True,
    )
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=mock.MagicMock(), task_function=mock.MagicMock(), config=cfg)
    job = mock.MagicMock()
    job.results.return_value = [JobReturn()]
    with mock.patch("submitit.AutoExecutor") as executor_cls:
        executor = executor_cls.return_value
        executor.map_array.return_value = [job, job]
        launcher.launch([["method=vanilla"], ["generation=beam"]], initial_job_idx=0)
    init_kwargs = executor_cls.call_args.kwargs
    assert init_kwargs["cluster"] == "slurm"
    # Jobs resume their run directory, so timeouts/preemptions may be resubmitted.
    assert init_kwargs["slurm_max_num_timeout"] == 3
    params = executor.update_parameters.call_args.kwargs
    assert params["gpus_per_node"] == 2
    assert params["timeout_min"] == 90
    assert params["slurm_partition"] == "gpu"
    assert params["slurm_account"] == "proj42"
    assert params["slurm_array_parallelism"] == 32
    assert params["tasks_per_node"] == 1
    submitted = executor.map_array.call_args.args
    assert list(submitted[1]) == [["method=vanilla"], ["generation=beam"]]
