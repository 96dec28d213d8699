"""Threads and OpenMP settings: chosen from the CPUs the process may use, applied before torch is imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ldm.run import runtime
from tests.conftest import ROOT


def test_thread_count_follows_affinity_and_sweeps_use_one(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert runtime.usable_cpus() == 3
    assert runtime.threads_for(None, sweep_job=False) == 3
    assert runtime.threads_for(None, sweep_job=True) == 1
    assert runtime.threads_for(2, sweep_job=True) == 2  # an explicit count wins
    # a DDP run's ranks share the usable CPUs (3 CPUs, 2 ranks: 1 each; never 0)
    assert runtime.threads_for(None, sweep_job=False, ranks=2) == 1
    assert runtime.threads_for(None, sweep_job=False, ranks=8) == 1
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 16)
    assert runtime.threads_for(None, sweep_job=False, ranks=4) == 4
    assert runtime.local_ranks({"strategy": "ddp", "devices": 4}) == 4
    assert runtime.local_ranks({"strategy": "ddp_find_unused_parameters_true", "devices": [0, 2]}) == 2
    assert runtime.local_ranks({"strategy": "auto", "devices": 4}) == 1  # not DDP: one process
    assert runtime.local_ranks({"strategy": "ddp", "devices": "auto"}) == 1 and runtime.local_ranks(None) == 1


def test_prepare_after_torch_sets_the_thread_count(monkeypatch):
    import torch

    before = torch.get_num_threads()
    for var in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # restored after the test
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(runtime, "STATE", {})
    try:
        assert runtime.prepare(1) == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
        assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
        assert runtime.STATE["runtime/before_torch"] is False and runtime.STATE["runtime/threads"] == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("multirun", [False, True])
def test_train_applies_thread_settings_before_torch_loads(tmp_path, multirun):
    """Read back from metrics.json: the settings were made before torch was imported, the wait policy is
    passive, and threads=null means every usable CPU for a run and 1 for a sweep's job."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}
    args = ["debug=fast", "stage=stage1", "logger=none", "metrics.features=null", "stage1.max_steps=2",
            f"paths.cache_dir={tmp_path / 'cache'}"]
    where = [f"hydra.sweep.dir={tmp_path / 'sweep'}", "seed=0"] if multirun else [f"hydra.run.dir={tmp_path / 'run'}"]
    proc = subprocess.run([sys.executable, "train.py", *(["-m"] if multirun else []), *args, *where], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / ("sweep/0" if multirun else "run") / "metrics.json").read_text())
    assert metrics["runtime/before_torch"] is True and metrics["runtime/omp_wait_policy"] == "PASSIVE"
    assert metrics["runtime/threads"] == (1 if multirun else runtime.usable_cpus())
