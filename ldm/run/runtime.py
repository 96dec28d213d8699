"""CPU threads and OpenMP settings of a process, applied by the entry scripts before torch is imported.

Why before: OpenMP reads its environment once, when torch loads it. Two settings matter on a small shared
machine:
- `OMP_WAIT_POLICY=PASSIVE`: idle OpenMP workers sleep instead of spin-waiting. With spinning, a 2-thread
  run beside one other busy process was measured 10-40x slower (the workers burn the core the other
  process needs, then wait for it); passive waiting costs little when the machine is idle.
- The thread count: `threads=null` means the CPUs this process may use (`os.sched_getaffinity`, which a
  container, `taskset` or SLURM may restrict below `os.cpu_count()`) for a single run, and 1 for each job
  of a sweep (run jobs side by side with `hydra/launcher=joblib hydra.launcher.n_jobs=<cpus>`: 2 jobs x 1
  thread gave 1.5x the throughput of 1 job x 2 threads here). A DDP run's ranks share the usable CPUs
  (usable / ranks each), as a sweep's jobs do.

This module imports nothing heavy, so the entry scripts can call `prepare` before `import torch`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

# what `prepare` found and set, for metrics.json (read back by a subprocess test)
STATE: dict = {}


def usable_cpus() -> int:
    """The CPUs this process may run on (affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_for(threads: Optional[int], sweep_job: bool, ranks: int = 1) -> int:
    """`threads=` as a count: as given, else 1 for a sweep's job, else the usable CPUs shared by the `ranks`
    processes a DDP run starts on this machine (each rank its share, at least 1)."""
    if threads is not None:
        return int(threads)
    return 1 if sweep_job else max(1, usable_cpus() // max(1, ranks))


def local_ranks(trainer: Any) -> int:
    """How many processes a trainer config starts on this machine: its devices under a DDP strategy, else 1
    (also when the count is not a number here, e.g. devices=auto)."""
    if not trainer or "ddp" not in str(trainer.get("strategy") or ""):
        return 1
    devices = trainer.get("devices")
    if isinstance(devices, int) and not isinstance(devices, bool):
        return max(1, devices)
    return len(devices) if hasattr(devices, "__len__") and not isinstance(devices, str) else 1


def prepare(threads: Optional[int], sweep_job: bool = False, ranks: int = 1) -> int:
    """Set the OpenMP environment and the thread count; call before torch is imported (it also works after,
    for the thread count only, as in tests that run in-process). Returns the thread count."""
    n = threads_for(threads, sweep_job, ranks)
    if n < 1:
        return n  # the preflight check reports it as one error line
    before_torch = "torch" not in sys.modules
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)  # also what DataLoader workers and DDP's child processes start with
    if not before_torch:
        import torch

        torch.set_num_threads(n)
    STATE.update({"runtime/threads": n, "runtime/omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
                  "runtime/usable_cpus": usable_cpus(), "runtime/local_ranks": ranks})
    STATE.setdefault("runtime/before_torch", before_torch)  # the first call of the process decides
    return n


def prepare_from_hydra(threads: Optional[int], trainer: Any = None) -> int:
    """`prepare` for an entry script's Hydra job: a job of a multirun counts as a sweep job; a DDP `trainer`
    config shares the CPUs among its ranks."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweep_job = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return prepare(threads, sweep_job, local_ranks(trainer))
