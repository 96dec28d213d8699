"""A GPU per job of a local parallel sweep: the least-loaded visible GPU, claimed through lock files.

Lightning's `devices: 1` means "the first GPU", so a joblib sweep on an 8-GPU box would put every job on
GPU 0. Here each job of a multirun whose trainer asks for one GPU (`trainer=gpu`, or the default
`accelerator: auto` where CUDA is available) claims a slot on the visible GPU that runs the fewest of this
machine's jobs right now (ties: the lowest index), and trains with `trainer.devices=[that GPU]`.

Why lock files and not "job k -> GPU k mod n": jobs last from seconds (a cached stage) to hours (a GAN row at its
cap), so round-robin piles new jobs onto a GPU whose earlier jobs are still running. A slot is an
exclusive `flock` on `<root>/gpu-<id>.<n>.lock`, held for the job's life and released by the kernel
when the process ends, also on SIGKILL: a crashed job never leaves a GPU looking busy.

- `<id>` is the physical GPU (the entry of `CUDA_VISIBLE_DEVICES`, or the index when it is unset), so two
  sweeps on one machine share the GPUs fairly, and two scheduler allocations that see different GPUs do not
  count each other's jobs.
- The root is `$LDM_GPU_SLOTS`, else `<tmp>/ldm-gpu-slots-<uid>`: local to the machine, as `flock` needs.
- How many jobs share a GPU is the launcher's concurrency: `hydra/launcher=gpus +jobs_per_gpu=4` runs
  4 x the visible GPUs at once (conf/hydra/launcher/gpus.yaml); the placement keeps them even.
- Not touched: CPU runs, an explicit device list (`trainer.devices=[3]`), several devices (DDP), single runs.

The job's metrics.json records `runtime/gpu` (the index Lightning used), `runtime/gpu_id` (the physical GPU)
and `runtime/gpu_jobs` (this machine's jobs on it when the job started, itself included).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from omegaconf import DictConfig, open_dict


def slot_root() -> Path:
    return Path(os.environ.get("LDM_GPU_SLOTS") or Path(tempfile.gettempdir()) / f"ldm-gpu-slots-{os.getuid()}")


def physical_ids(count: int) -> list[str]:
    """The physical id of each visible GPU (index i -> the i-th entry of CUDA_VISIBLE_DEVICES)."""
    listed = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return [listed[i] if i < len(listed) else str(i) for i in range(count)]


def visible_gpus() -> int:
    """How many CUDA GPUs this process sees (0 on a CPU build)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def wants_one_gpu(trainer: DictConfig, gpus: int) -> bool:
    """The trainer asks for one unspecified GPU: what Lightning would put on GPU 0."""
    strategy = trainer.get("strategy")  # only the DDP presets set one
    return gpus > 0 and str(trainer.accelerator).lower() in ("gpu", "cuda", "auto") \
        and str(trainer.devices) in ("1", "auto") and str(strategy or "auto") == "auto"


@dataclass
class Claim:
    gpu: int        # the index among visible GPUs (what trainer.devices gets)
    gpu_id: str     # the physical GPU
    jobs: int       # this machine's jobs on it now, this one included
    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the descriptor drops the flock; the file stays for the next job
            self.fd = -1

    def info(self) -> dict:
        return {"runtime/gpu": self.gpu, "runtime/gpu_id": self.gpu_id, "runtime/gpu_jobs": self.jobs}


def _held(path: Path) -> bool:
    """Is this slot file locked by a live job? (Tried without blocking, released at once when free.)"""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)  # also drops the trial lock
    return False


def _slots(root: Path, gpu_id: str) -> list[Path]:
    return sorted(root.glob(f"gpu-{gpu_id}.*.lock"), key=lambda p: int(p.name.split(".")[-2]))


def load(root: Path, ids: Sequence[str]) -> list[int]:
    """Live jobs per GPU."""
    return [sum(_held(p) for p in _slots(root, i)) for i in ids]


def claim(ids: Sequence[str], root: Optional[Path] = None) -> Claim:
    """Claim a slot on the least-loaded GPU of `ids` (physical ids, in visible order)."""
    root = root or slot_root()
    root.mkdir(parents=True, exist_ok=True)
    guard = os.open(root / ".assign.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)  # one claim at a time on this machine: counts and claim agree
        jobs = load(root, ids)
        gpu = min(range(len(ids)), key=lambda i: (jobs[i], i))
        n = 0
        while _held(root / f"gpu-{ids[gpu]}.{n}.lock"):
            n += 1
        path = root / f"gpu-{ids[gpu]}.{n}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for a person looking: which process holds it
        return Claim(gpu, ids[gpu], jobs[gpu] + 1, path, fd)
    finally:
        os.close(guard)


@contextlib.contextmanager
def assigned(cfg: DictConfig, sweep_job: bool, gpus: Optional[int] = None) -> Iterator[dict]:
    """For a sweep job that asks for one GPU: claim one, set `trainer.devices=[it]` for the job's life, and
    yield what metrics.json records about it ({} when nothing is assigned)."""
    trainer = cfg.get("trainer")
    if not sweep_job or trainer is None:
        yield {}
        return
    gpus = visible_gpus() if gpus is None else gpus
    if not wants_one_gpu(trainer, gpus):
        yield {}
        return
    c = claim(physical_ids(gpus))
    try:
        with open_dict(cfg):
            cfg.trainer.devices = [c.gpu]
        yield c.info()
    finally:
        c.release()


def jobs_for(jobs_per_gpu: object) -> int:
    """The launcher's concurrency for `jobs_per_gpu` jobs on each visible GPU (at least 1 job)."""
    try:
        per = int(jobs_per_gpu)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"jobs_per_gpu={jobs_per_gpu!r} must be an integer >= 1") from None
    if per < 1:
        raise ValueError(f"jobs_per_gpu={jobs_per_gpu} must be an integer >= 1")
    return per * max(1, visible_gpus())


def register_resolver() -> None:
    """`${ldm_gpu_jobs:N}` for conf/hydra/launcher/gpus.yaml (registered by the entry scripts)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("ldm_gpu_jobs"):
        OmegaConf.register_new_resolver("ldm_gpu_jobs", jobs_for)
