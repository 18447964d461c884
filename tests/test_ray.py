"""The study on Ray: the same predictions as in-process, a killed worker retried with nothing stored twice,
two drivers on one work folder, and a failing run named with the worker's traceback."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from fusionkit.errors import TrainingError  # noqa: E402
from fusionkit.study import RayExecutor, run_study, study_config  # noqa: E402

# Each fusion system also runs its matched control: 6 runs per seed (tuning budget 1: each tuned control is its
# matched control's run, one more row in the results and no more training).
ARMS = [{"system": "sequential", "strategy": "sequential", "per_source": True, "controls": []},
        {"system": "distill", "strategy": "distill"},
        {"system": "merge task_arithmetic", "strategy": "merge", "knobs": {"method": "task_arithmetic"},
         "controls": []}]
SMALL = {"seeds": [0, 1], "tuning_budget": 1, "task_train_cap": 80, "validation_cap": 20, "test_cap": 40,
         "cka_examples": 8,
         "fusion_size": 40, "fusion_arms": ARMS, "train_knobs": {"epochs": 1, "batch_size": 16, "progress": False},
         "expert_knobs": {"expert_train_size": 40, "expert_epochs": 1, "expert_seed": None}}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def small_study(data_dir, workdir, **overrides):
    return study_config("smoke", "fusion", "cr", ["mr"], str(workdir), str(data_dir), overrides={**SMALL, **overrides})


def predictions(store_root: Path) -> dict:
    from fusionkit.study.store import ResultsStore

    store = ResultsStore(store_root)
    return {run_id: store.predictions(run_id) for run_id in store.to_frame()["run_id"]}


@pytest.mark.slow
def test_ray_gives_bit_identical_predictions_to_local(data_dir, tmp_path, local_ray, monkeypatch):
    import torch

    torch.set_num_threads(2)  # this process as a user has it on 2 cores: the study's threads (1) apply to each run
    local = run_study(small_study(data_dir, tmp_path / "local"), progress=False)
    assert torch.get_num_threads() == 2  # and the process gets its own count back
    on_ray = run_study(small_study(data_dir, tmp_path / "ray"), progress=False, executor=RayExecutor(workers=2))
    assert set(local["run_id"]) == set(on_ray["run_id"]) and local["run_id"].nunique() == 12
    assert on_ray.attrs["runs_trained"] == 12
    # the workers' busy fraction is measured: fitting time over wall time x workers
    assert 0 < on_ray.attrs["busy_fraction"] <= 1
    ours, theirs = predictions(tmp_path / "local" / "results"), predictions(tmp_path / "ray" / "results")
    for run_id, (y, probs) in ours.items():
        assert np.array_equal(y, theirs[run_id][0]) and np.array_equal(probs, theirs[run_id][1]), run_id
    from fusionkit.study.store import ResultsStore

    for root in ("local", "ray"):  # every record says what it ran with
        store = ResultsStore(tmp_path / root / "results")
        assert {store.record(run_id)["config"]["details"]["torch_threads"] for run_id in ours} == {1}
    # every artefact once: one expert per seed; per seed, two teachers, each a run of the study (the sequential
    # run, and its no-source control, which is distill's control's target-only teacher)
    assert len([p for p in (tmp_path / "ray" / "experts").iterdir() if p.is_dir()]) == 2
    assert len([p for p in (tmp_path / "ray" / "models").iterdir() if p.is_dir()]) == 4


def _kill_one_run_worker(stop: threading.Event, killed: list) -> None:
    import psutil

    while not stop.is_set() and not killed:
        for process in psutil.process_iter(["pid", "cmdline"]):
            if any("_run_task" in part for part in (process.info["cmdline"] or [])):
                os.kill(process.info["pid"], signal.SIGKILL)
                killed.append(process.info["pid"])
                return
        time.sleep(0.02)


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_retried_and_each_run_is_stored_once(data_dir, tmp_path, local_ray):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_one_run_worker, args=(stop, killed))
    killer.start()
    try:
        results = run_study(small_study(data_dir, tmp_path), progress=False, executor=RayExecutor(workers=2))
    finally:
        stop.set()
        killer.join()
    assert killed, "no run task was seen running"
    store = tmp_path / "results"
    assert results["run_id"].nunique() == 12
    assert len(list(store.glob("*.json"))) == 12 and len(list(store.glob("*.npz"))) == 12
    assert not list(store.glob(".*.tmp")) and not (store / "damaged").exists()


@pytest.mark.slow
def test_a_failing_run_names_itself_with_the_workers_traceback(data_dir, tmp_path, local_ray):
    bad = [{"system": "merge broken", "strategy": "merge", "knobs": {"method": "nosuch"}, "controls": []}]
    with pytest.raises(TrainingError, match=r"run [0-9a-f]+ \(merge broken, seed 0, n=40, target cr\) failed on a "
                                            r"Ray worker:(.|\n)*merge: unknown method 'nosuch'"):
        run_study(small_study(data_dir, tmp_path, fusion_arms=bad, seeds=[0]), progress=False,
                  executor=RayExecutor(workers=2, max_retries=0))


DRIVER = """
import sys
from fusionkit.study import RayExecutor, run_study, study_config
config = study_config("smoke", "fusion", "cr", ["mr"], sys.argv[1], sys.argv[2], overrides={overrides})
results = run_study(config, progress=False, executor=RayExecutor(workers=1))
print("trained", results.attrs["runs_trained"], "of", results["run_id"].nunique())
"""


@pytest.mark.slow
def test_two_drivers_on_one_work_folder_train_each_run_once(data_dir, tmp_path):
    script = DRIVER.replace("{overrides}", repr(SMALL))
    drivers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(data_dir)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [driver.communicate(timeout=600)[0] for driver in drivers]
    assert [driver.returncode for driver in drivers] == [0, 0], outputs
    counts = [line.split() for output in outputs for line in output.splitlines() if line.startswith("trained ")]
    assert [int(count[3]) for count in counts] == [12, 12]
    assert sum(int(count[1]) for count in counts) == 12  # together they trained each run exactly once


@pytest.mark.slow
def test_experts_trained_in_process_are_reused_by_ray_tasks(data_dir, tmp_path, local_ray):
    """Notebook 3 trains the experts in the kernel (all threads); notebook 4's Ray tasks (one thread) use them."""
    merge_only = [{"system": "merge task_arithmetic", "strategy": "merge", "knobs": {"method": "task_arithmetic"},
                   "controls": []}]
    run_study(small_study(data_dir, tmp_path, fusion_arms=merge_only, seeds=[0]), progress=False)
    experts = sorted(p.name for p in (tmp_path / "experts").iterdir() if p.is_dir())
    results = run_study(small_study(data_dir, tmp_path, seeds=[0]), progress=False, executor=RayExecutor(workers=2))
    assert results["run_id"].nunique() == 6
    assert sorted(p.name for p in (tmp_path / "experts").iterdir() if p.is_dir()) == experts
