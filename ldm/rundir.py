"""The run-directory contract: what one job writes and every reader of many jobs relies on.

A run directory (a train.py run, or one job of a multirun) holds `.hydra/config.yaml` and
`.hydra/overrides.yaml` (what Hydra composed), `metrics.json` (the status file: `running` while the job
lives, then `ok`, `failed`, `diverged` or `interrupted` with the results), optionally `eval.json` (a later
re-evaluation) and `checkpoints/<stage>/{last,best-step*}.ckpt`. The run package writes it
(`ldm.run.task`), the analysis package and loading read it; both import this module and nothing of each other.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Optional

import yaml

from ldm.errors import ConfigError
from ldm.utils.io import read_json

UNFINISHED = ("running", "interrupted")


def slurm_job() -> Optional[str]:
    """This process's SLURM job (`<array job>_<task>` for an array task), or None outside SLURM."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


def slurm_restart() -> int:
    """How often SLURM has requeued this job (SLURM_RESTART_COUNT; 0 outside SLURM or on the first attempt)."""
    try:
        return max(0, int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0))
    except ValueError:
        return 0


def run_status(record: dict) -> str:
    """A status file's status, with `running` read as `interrupted` when its process is gone: on this host when
    its pid is dead, anywhere when it was an earlier attempt of this requeued SLURM job (SLURM ends an attempt
    before it starts the next)."""
    status = record.get("status", "missing")
    if status != "running":
        return status
    job = record.get("slurm_job")
    if job and job == slurm_job() and int(record.get("slurm_restart") or 0) < slurm_restart():
        return "interrupted"
    pid, host = record.get("pid"), record.get("host")
    if host == socket.gethostname() and isinstance(pid, int):
        try:
            os.kill(pid, 0)
            return "running"
        except ProcessLookupError:
            return "interrupted"
        except PermissionError:  # alive, another user's
            return "running"
    return "interrupted" if host == socket.gethostname() else "running"


def read_status(path: Path) -> dict:
    """A run's status record: its JSON object, or {'status': 'missing' | 'corrupt', ...}; never raises."""
    if not path.is_file():
        return {"status": "missing"}
    try:
        record = read_json(path)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (ValueError, OSError) as e:
        return {"status": "corrupt", "error": f"{path.name} unreadable ({type(e).__name__})"}
    return {**record, "status": run_status(record)}


def job_overrides(job: Path) -> dict[str, str]:
    """{key: value} of the overrides a job ran with (`.hydra/overrides.yaml`; `+`/`~` prefixes dropped); {} when
    the file is missing or damaged (`overrides_problem` says which)."""
    items = _override_items(job)
    out = {}
    for item in items if isinstance(items, list) else []:
        k, _, v = item.lstrip("+~").partition("=")
        out[k] = v
    return out


def _override_items(job: Path):
    path = job / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(path.read_text()) or [] if path.is_file() else []
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return None
    return items if isinstance(items, list) and all(isinstance(i, str) for i in items) else None


def overrides_problem(job: Path) -> Optional[str]:
    """Why a job's `.hydra/overrides.yaml` cannot be read as a list of overrides (truncated, not a list), or None."""
    return None if _override_items(job) is not None else ".hydra/overrides.yaml is damaged (not a list of overrides)"


PATTERN = {"last": "last.ckpt", "best": "best-*.ckpt"}  # checkpoint=... -> file name in checkpoints/<stage>/


def pick_checkpoint(run_dir: Path, stage: str, which: str) -> Optional[Path]:
    """checkpoints/<stage>/last.ckpt or the (latest) best-*.ckpt; None when the stage has no such checkpoint."""
    if which not in PATTERN:
        raise ConfigError(f"checkpoint={which}: choose last or best")
    found = sorted((run_dir / "checkpoints" / stage).glob(PATTERN[which]))
    return found[-1] if found else None


# the headline values a run prints when it ends (and the README's generated output block shows)
SUMMARY_KEYS = ["status", "stage1/source", "stage1/steps", "stage1/wall_s", "recon/psnr", "recon/rfid",
                "stage2/source", "stage2/steps", "stage2/wall_s", "gen/fid", "eval/fid_floor", "gen/classes_covered",
                "gen/nfe", "gen/sec_per_sample", "eval/evaluator_acc"]


def summary(run_dir: Path, metrics: dict) -> str:
    """What a finished run left where: checkpoints, figures, the latent cache, metrics.json and its headline values."""
    lines = [f"run directory: {run_dir}"]
    for sub in sorted((run_dir / "checkpoints").glob("*")):
        lines.append(f"  checkpoints/{sub.name}: " + ", ".join(sorted(p.name for p in sub.glob("*.ckpt"))))
    pngs = sorted(p.name for p in run_dir.glob("*.png"))
    if pngs:
        lines.append("  figures: " + ", ".join(pngs))
    if (run_dir / "latents.pt").exists():
        lines.append(f"  latent cache: {run_dir / 'latents.pt'}")
    lines.append(f"  metrics: {run_dir / 'metrics.json'}")
    shown = [f"{k}={metrics[k]:.4g}" if isinstance(metrics[k], float) else f"{k}={metrics[k]}"
             for k in SUMMARY_KEYS if k in metrics]
    lines.append("  " + "  ".join(shown))
    return "\n".join(lines)


def upgrade_config(cfg):
    """A run's `.hydra/config.yaml` (an OmegaConf DictConfig) in today's form, for readers of older runs: keys
    added since have the value every run had before they existed (`stage`, added in 693bf3a: runs before it ran
    both stages). Today's runs pass unchanged."""
    from omegaconf import open_dict

    if "stage" not in cfg:
        with open_dict(cfg):
            cfg.stage = "all"
    return cfg
