"""A GPU per sweep job (ldm.run.devices), on fake device lists: least-loaded placement, release on exit and on
SIGKILL, what is left alone, the launcher preset's concurrency, and what metrics.json records."""

import os
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from ldm.run import devices, task


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("LDM_GPU_SLOTS", str(tmp_path / "slots"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path / "slots"


def test_jobs_go_to_the_least_loaded_gpu_and_free_their_slot(root):
    ids = ["0", "1", "2"]
    a, b, c, d = (devices.claim(ids) for _ in range(4))
    assert [x.gpu for x in (a, b, c, d)] == [0, 1, 2, 0]
    assert [x.jobs for x in (a, b, c, d)] == [1, 1, 1, 2]
    assert devices.load(root, ids) == [2, 1, 1]
    b.release()  # GPU 1's job ended: the next job goes there, not round-robin to GPU 1 -> 2 -> 0
    e = devices.claim(ids)
    assert e.gpu == 1 and e.path == root / "gpu-1.0.lock"  # the freed slot file is reused
    for x in (a, c, d, e):
        x.release()
    assert devices.load(root, ids) == [0, 0, 0]


def test_a_killed_job_leaves_no_gpu_looking_busy(root):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from ldm.run import devices; c = devices.claim(['0', '1']); "
        "print(c.gpu, flush=True); time.sleep(60)")], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "LDM_GPU_SLOTS": str(root)})
    try:
        assert holder.stdout.readline().strip() == "0"
        assert devices.load(root, ["0", "1"]) == [1, 0]
        assert devices.claim(["0", "1"]).gpu == 1
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    deadline = time.time() + 10
    while devices.load(root, ["0", "1"])[0] and time.time() < deadline:
        time.sleep(0.05)
    assert devices.load(root, ["0", "1"])[0] == 0  # the kernel dropped the dead process's lock


def test_slots_are_per_physical_gpu(root, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    ids = devices.physical_ids(2)
    assert ids == ["2", "3"]
    c = devices.claim(ids)
    assert (c.gpu, c.gpu_id, c.path.name) == (0, "2", "gpu-2.0.lock")  # index 0 for Lightning, GPU 2 on the box
    c.release()


@pytest.mark.parametrize("trainer, assigned", [
    ({"accelerator": "gpu", "devices": 1}, [1]),
    ({"accelerator": "auto", "devices": 1}, [1]),   # the default trainer on a CUDA machine
    ({"accelerator": "cpu", "devices": 1}, 1),
    ({"accelerator": "gpu", "devices": [3]}, [3]),  # the user's own choice
    ({"accelerator": "gpu", "devices": 2, "strategy": "ddp"}, 2),
])
def test_only_jobs_that_ask_for_one_unnamed_gpu_are_placed(root, trainer, assigned):
    busy = devices.claim(["0", "1"])  # GPU 0 holds a job already
    cfg = OmegaConf.create({"trainer": trainer})
    OmegaConf.set_struct(cfg, True)
    with devices.assigned(cfg, sweep_job=True, gpus=2) as info:
        assert OmegaConf.to_container(cfg.trainer)["devices"] == assigned
        placed = isinstance(assigned, list) and trainer["devices"] == 1
        assert info == ({"runtime/gpu": 1, "runtime/gpu_id": "1", "runtime/gpu_jobs": 1} if placed else {})
    assert devices.load(root, ["0", "1"]) == [1, 0]  # the job's slot is free again after it
    busy.release()


def test_single_runs_and_cpu_builds_are_left_alone(root):
    cfg = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1}})
    with devices.assigned(cfg, sweep_job=False, gpus=4) as info:
        assert info == {} and cfg.trainer.devices == 1
    with devices.assigned(cfg, sweep_job=True, gpus=0) as info:  # no CUDA: preflight reports trainer=gpu
        assert info == {} and cfg.trainer.devices == 1
    assert not root.exists()


def test_a_sweep_job_records_its_gpu_in_metrics_json(root, tmp_path, monkeypatch):
    monkeypatch.setattr(task, "in_multirun", lambda: True)
    monkeypatch.setattr(devices, "visible_gpus", lambda: 2)
    cfg = OmegaConf.create({"trainer": {"accelerator": "gpu", "devices": 1}, "paths": {"output_dir": str(tmp_path)}})
    seen = []

    def job(c, report):
        seen.append(OmegaConf.to_container(c.trainer.devices))
        return {"x": 1.0}

    metrics = task.run_task(cfg, job, tmp_path / "metrics.json")
    assert seen == [[0]]
    assert metrics["status"] == "ok" and metrics["runtime/gpu"] == 0 and metrics["runtime/gpu_jobs"] == 1
    assert OmegaConf.load(tmp_path / "metrics.json")["runtime/gpu_id"] == "0"
    assert devices.load(root, ["0", "1"]) == [0, 0]


def test_the_gpus_launcher_runs_jobs_per_gpu_times_the_gpus(monkeypatch):
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    devices.register_resolver()
    monkeypatch.setattr(devices, "visible_gpus", lambda: 8)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=gpus", "+jobs_per_gpu=3"], return_hydra_config=True)
        assert OmegaConf.select(cfg, "hydra.launcher.n_jobs") == 24
        assert OmegaConf.select(compose("train", ["hydra/launcher=gpus"], return_hydra_config=True),
                                "hydra.launcher.n_jobs") == 8
    monkeypatch.setattr(devices, "visible_gpus", lambda: 0)
    assert devices.jobs_for(2) == 2  # no GPU: as many jobs as asked, on the CPU
    for bad in (0, "two"):
        with pytest.raises(ValueError, match="jobs_per_gpu=.* must be an integer >= 1"):
            devices.jobs_for(bad)


def test_the_slurm_preset_asks_one_gpu_per_task():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        launcher = compose("train", ["hydra/launcher=slurm_gpu"], return_hydra_config=True).hydra.launcher
    assert launcher.gpus_per_task == 1 and launcher.tasks_per_node == 1
    assert launcher._target_.endswith("SlurmLauncher")
