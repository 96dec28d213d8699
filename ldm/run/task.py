"""The task wrapper around train.py and evaluate.py: status file, error policy, exit codes, logger teardown.

The entry's own function then reads as a straight line of steps (after lightning-hydra-template's
`task_wrapper`). Policy:
- a `UserError` (bad input the user can fix) prints one `error: ...` line on stderr, records
  `status: failed` and exits 2;
- `Diverged` records `status: diverged` and returns normally (exit 0: a result, not a crash);
- anything else records `status: failed` with the exception's one-line summary and re-raises;
- inside a Hydra multirun a failing job is recorded and logged, and the sweep goes on;
- SIGTERM and SIGINT (`Interrupted`) record `status: interrupted` and exit 128 + the signal (143, 130), also
  from a sweep, which then stops: a scheduler's time limit or a Ctrl-C never looks like success.
The status file (`metrics.json` for train.py) is written `running` when the task starts, and again as
results arrive, so a run killed by the OS is told apart from one that never started.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from omegaconf import DictConfig

from ldm import signals
from ldm.errors import Diverged, Interrupted, UserError
from ldm.run import devices
from ldm.rundir import slurm_job, slurm_restart
from ldm.utils.io import write_json

log = logging.getLogger(__name__)


class DirectoryTaken(UserError):
    """The run directory already holds another run's record (a reused hydra.run.dir, a second sweep into one
    folder): refused before anything is written, so that record is not overwritten."""


def check_owner(cfg: DictConfig, status_path: Optional[Path]) -> None:
    """Refuse a directory whose status file belongs to another run, unless this run resumes that one in place or
    says `+overwrite=true` (the claims runner's rerun of an incomplete sweep, whose finished stages come from the
    stage cache)."""
    if status_path is None or process_rank() != 0 or not status_path.exists() or cfg.get("overwrite"):
        return
    resume = cfg.get("resume")
    if resume and Path(resume).resolve() == status_path.parent.resolve():
        return
    from ldm.rundir import read_status

    prior = read_status(status_path)
    when = f", started {prior['started']}" if prior.get("started") else ""
    raise DirectoryTaken(f"{status_path.parent} already holds a run (status {prior['status']}{when}); its record "
                         f"is kept: give this run its own directory (hydra.run.dir=..., or hydra.sweep.dir=... for a "
                         f"sweep), or continue that run with resume={status_path.parent}")


AUTO_RESUME_ENV = "LDM_AUTO_RESUME"  # rank 0's decision, inherited by the DDP ranks it launches


def auto_resume(cfg: DictConfig, status_path: Optional[Path]) -> None:
    """`resume=auto`, and a requeued SLURM job (SLURM_RESTART_COUNT > 0) that sets no `resume`: continue the run
    this directory holds when it stopped (status interrupted) with a checkpoint; start afresh in it when it holds
    no run, or a stopped one with nothing to continue from. Another run's finished or failed record is left to
    `check_owner`, which refuses it. Sets `cfg.resume` (and `cfg.overwrite` for a fresh start over a stopped run
    without checkpoints) before anything reads them."""
    if "resume" not in cfg:  # evaluate.py and sample.py train nothing to continue
        return
    want = cfg.get("resume")
    if not (want == "auto" or (want is None and slurm_restart() > 0 and status_path is not None)):
        return
    from omegaconf import open_dict

    from ldm.rundir import read_status
    from ldm.utils.checkpoint import run_checkpoint

    own = status_path.parent if status_path is not None else Path(cfg.paths.output_dir)
    if process_rank() != 0 and AUTO_RESUME_ENV in os.environ:  # rank 0 decided before it launched this rank
        resume, fresh = os.environ[AUTO_RESUME_ENV] or None, False
    else:
        prior = read_status(status_path) if status_path is not None else {"status": "missing"}
        has_ckpt = any(run_checkpoint(own, s).parent.is_dir() and any(run_checkpoint(own, s).parent.glob("*.ckpt"))
                       for s in ("stage1", "stage2"))
        resume = str(own) if prior["status"] == "interrupted" and has_ckpt else None
        fresh = prior["status"] == "interrupted" and not has_ckpt
        why = "requeued SLURM job" if want is None else "resume=auto"
        if resume:
            log.info("%s: continuing the stopped run in %s", why, own)
        elif prior["status"] in ("missing", "interrupted"):
            log.info("%s: %s holds no run to continue; starting afresh", why, own)
        os.environ[AUTO_RESUME_ENV] = resume or ""
    with open_dict(cfg):
        cfg.resume = resume
        if fresh:
            cfg.overwrite = True


class Stopped(SystemExit):
    """The exit of a run that a signal stopped (code 128 + signal); a sweep lets it through and stops."""


def one_line(err: BaseException) -> str:
    msg = " ".join(str(err).split()) or type(err).__name__
    return msg if isinstance(err, (UserError, Diverged)) else f"{type(err).__name__}: {msg}"


def process_rank() -> int:
    """This process's global rank from the launcher's environment (0 outside distributed runs)."""
    for var in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


class StatusFile:
    """`metrics.json` of a run: `running` (pid, host, start time) first, then the partial and final results."""

    def __init__(self, path: Optional[Path]) -> None:
        self.path = path if process_rank() == 0 else None  # one writer per run, also under DDP
        self.started = {"pid": os.getpid(), "host": socket.gethostname(),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if slurm_job():  # lets a requeued attempt tell its own earlier attempt from another live run
            self.started.update(slurm_job=slurm_job(), slurm_restart=slurm_restart())

    def running(self, metrics: dict) -> None:
        if self.path is not None:
            write_json(self.path, {"status": "running", **self.started, **metrics})

    def final(self, metrics: dict) -> None:
        if self.path is not None:  # which SLURM job and attempt made it, where one did
            write_json(self.path, {**{k: v for k, v in self.started.items() if k.startswith("slurm_")}, **metrics})


def finish_wandb(metrics: dict, failed: bool) -> None:
    """The run's status into the wandb summary, then wandb.finish(), also after a failure (the final metrics and
    figures of a run that finished are logged by ldm.run.tracking)."""
    wandb = sys.modules.get("wandb")  # only if a WandbLogger imported it
    if wandb is None or wandb.run is None:
        return
    try:
        wandb.run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
    finally:
        wandb.finish(exit_code=1 if failed else 0)


class _Drop(logging.Filter):
    """Drops log records whose message contains `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def tidy_output() -> None:
    """Each message once, and none that asks nothing of the user. Every silencing says why.

    - Lightning's `lightning` logger has its own stderr handler and also propagates to the root logger,
      which Hydra gives a console and a file handler: every message came out twice. Its handler goes;
      the messages still reach the console and the run's log file through Hydra's handlers.
    - The litlogger tip is an advertisement printed by every Trainer.
    - "module(s) in eval mode at the start of training": the EMA copy of the UNet (and frozen parts)
      are in eval mode on purpose.
    - LeafSpec deprecation: raised inside Lightning by this torch version, nothing to change on our side.
    """
    import warnings

    lightning_logger = logging.getLogger("lightning")
    for handler in list(lightning_logger.handlers):
        if type(handler) is logging.StreamHandler:
            lightning_logger.removeHandler(handler)
    lightning_logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _Drop) for f in rank_zero.filters):
        rank_zero.addFilter(_Drop("litlogger"))
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


def run_task(cfg: DictConfig, task: Callable[[DictConfig, Callable[[dict], None]], Optional[dict]],
             status_path: Optional[Path] = None) -> Optional[dict]:
    """Run `task(cfg, report)` under the policy above; `report(partial_metrics)` records progress.

    Returns the task's metrics (with `status`), or None on non-zero DDP ranks and for failed multirun jobs.
    """
    tidy_output()
    signals.install()
    try:  # before the status file is touched; in a sweep, every later job would overwrite another sweep's too
        auto_resume(cfg, status_path)
        check_owner(cfg, status_path)
    except DirectoryTaken as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)  # a SystemExit passes through Hydra's job runner: the whole sweep stops
    if in_multirun():
        try:
            with devices.assigned(cfg, sweep_job=True) as device:  # a GPU of its own (ldm.run.devices)
                return _run(cfg, task, status_path, device)
        except Stopped:
            log.error("job stopped by a signal; the sweep stops")
            raise
        except (Exception, SystemExit) as e:  # recorded in this job's status file already
            log.error("job failed (%s); the sweep goes on", one_line(e))
            return None
    return _run(cfg, task, status_path)


RECORD_ONLY = ("status", "error", "pid", "host", "started", "slurm_job", "slurm_restart")  # of one attempt


def carried_over(cfg: DictConfig, status_path: Optional[Path]) -> dict:
    """A run resumed in its own directory continues that directory's record: the stopped attempt's results
    (e.g. `stage1/steps`, which tells resume= that stage 1 finished) stay in the status file it now writes."""
    resume = cfg.get("resume")
    if status_path is None or not resume or Path(resume).resolve() != status_path.parent.resolve():
        return {}
    from ldm.rundir import read_status

    return {k: v for k, v in read_status(status_path).items() if k not in RECORD_ONLY}


def _run(cfg: DictConfig, task, status_path: Optional[Path], device: Optional[dict] = None) -> Optional[dict]:
    prior = carried_over(cfg, status_path)  # before this attempt's first write replaces the file
    status = StatusFile(status_path)
    metrics: dict = {**prior, **(device or {})}  # filled stage by stage, so a failure still records what finished

    def report(partial: dict) -> None:
        metrics.update(partial)
        status.running(metrics)

    status.running(metrics)
    failed = True
    try:
        result = task(cfg, report)
        failed = False
        if result is None:  # a non-zero DDP rank: rank 0 records and reports
            return None
        metrics.update(result)
        metrics = {"status": "ok", **metrics}
    except UserError as e:
        status.final({**metrics, "status": "failed", "error": one_line(e)})
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except Diverged as e:
        failed = False
        metrics = {**metrics, "status": "diverged", "error": one_line(e)}
        log.error("run diverged: %s", one_line(e))
    except Interrupted as e:
        status.final({**metrics, "status": "interrupted", "error": f"stopped by {e.name}"})
        print(f"error: stopped by {e.name}; continue it with resume={cfg.paths.output_dir}", file=sys.stderr)
        raise Stopped(128 + e.signum) from None
    except KeyboardInterrupt:
        status.final({**metrics, "status": "interrupted", "error": "stopped by the user (Ctrl-C)"})
        raise
    except SystemExit as e:  # Lightning's own answer to a signal it caught first (SIGTERMException, exit 1 on ^C)
        if type(e).__name__ == "SIGTERMException":
            status.final({**metrics, "status": "interrupted", "error": "stopped by a signal"})
            raise Stopped(128 + signal.SIGTERM) from None
        raise
    except Exception as e:
        status.final({**metrics, "status": "failed", "error": one_line(e)})
        raise
    finally:
        finish_wandb(metrics, failed)
    status.final(metrics)
    return metrics
