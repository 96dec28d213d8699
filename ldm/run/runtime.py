"""CPU threads and OpenMP settings of a process, applied by the entry scripts before torch is imported.

Why before: OpenMP reads its environment once, when torch loads it. Two settings matter on a small shared
machine:
- `OMP_WAIT_POLICY=PASSIVE`: idle OpenMP workers sleep instead of spin-waiting. With spinning, a 2-thread
  run beside one other busy process was measured 10-40x slower (the workers burn the core the other
  process needs, then wait for it); passive waiting costs little when the machine is idle.
- The thread count: `threads=null` means the CPUs this process may use (`os.sched_getaffinity`, which a
  container, `taskset` or SLURM may restrict below `os.cpu_count()`) for a single run, and 1 for each job
  of a sweep (run jobs side by side with `hydra/launcher=joblib hydra.launcher.n_jobs=<cpus>`: 2 jobs x 1
  thread gave 1.5x the throughput of 1 job x 2 threads here).

This module imports nothing heavy, so the entry scripts can call `prepare` before `import torch`.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

# what `prepare` found and set, for metrics.json (read back by a subprocess test)
STATE: dict = {}


def usable_cpus() -> int:
    """The CPUs this process may run on (affinity), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def threads_for(threads: Optional[int], sweep_job: bool) -> int:
    """`threads=` as a count: as given, else 1 for a sweep's job, else every usable CPU."""
    if threads is not None:
        return int(threads)
    return 1 if sweep_job else usable_cpus()


def prepare(threads: Optional[int], sweep_job: bool = False) -> int:
    """Set the OpenMP environment and the thread count; call before torch is imported (it also works after,
    for the thread count only, as in tests that run in-process). Returns the thread count."""
    n = threads_for(threads, sweep_job)
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
                  "runtime/usable_cpus": usable_cpus()})
    STATE.setdefault("runtime/before_torch", before_torch)  # the first call of the process decides
    return n


def prepare_from_hydra(threads: Optional[int]) -> int:
    """`prepare` for an entry script's Hydra job: a job of a multirun counts as a sweep job."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    sweep_job = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return prepare(threads, sweep_job)
