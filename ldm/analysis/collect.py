"""Sweep directories -> records: one per job (a folder with .hydra/overrides.yaml), with its overrides, status and
metrics, read through the run-directory contract (`ldm.rundir`)."""

from __future__ import annotations

from pathlib import Path

from ldm.errors import ConfigError
from ldm.rundir import job_overrides, read_status

IGNORED_OVERRIDES = ("seed",)  # varies within a row: never a row's key



def config_value(cfg: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg



def collect(sweep_dir: Path, eval_file: str = "eval.json") -> tuple[list[dict], list[str]]:
    """One record per job directory (a folder with .hydra/overrides.yaml): overrides, status, metrics.

    Status: the job's `metrics.json` status (ok, diverged, failed), `interrupted` for a run killed while
    `running`, `corrupt` for an unreadable `metrics.json`, `missing` for none.

    A finished job re-evaluated from its checkpoints (`evaluate.py run_dir=<job>`, e.g. after a metric was added)
    has an `eval_file` (relative to the job: eval.json, or <out_dir>/eval.json for an evaluation written elsewhere,
    e.g. with more samples); its values take precedence over metrics.json and the record says so."""
    if not sweep_dir.is_dir():
        raise ConfigError(f"table dir={sweep_dir} is not a directory: "
                          "pass a multirun directory (logs/<task>/multiruns/<time>)")
    jobs = sorted((p for p in sweep_dir.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()),
                  key=lambda p: (len(p.name), p.name))
    records, swept = [], set()
    all_overrides = [job_overrides(j) for j in jobs]
    keys = {k for o in all_overrides for k in o}
    # swept keys: those whose value differs between jobs (constant ones, e.g. experiment=..., describe all rows)
    swept = sorted(k for k in keys if k not in IGNORED_OVERRIDES and len({o.get(k) for o in all_overrides}) > 1)
    for job, o in zip(jobs, all_overrides):
        metrics = read_status(job / "metrics.json")  # missing, corrupt and interrupted runs are statuses too
        status = metrics["status"]
        evaluated = read_status(job / eval_file) if status == "ok" else {}
        re_evaluated = evaluated.get("status") == "ok"
        if re_evaluated:
            metrics = {**metrics, **evaluated}
        records.append({"job": job.name, "group": tuple((k, o.get(k, "")) for k in swept), "seed": o.get("seed"),
                        "status": status, "error": metrics.get("error", ""), "metrics": metrics,
                        "re_evaluated": re_evaluated})
    return records, swept
