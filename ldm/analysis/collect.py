"""Sweep directories -> records: one per job (a folder with .hydra/overrides.yaml), with its overrides, status and
metrics, read through the run-directory contract (`ldm.rundir`)."""

from __future__ import annotations

from pathlib import Path

from ldm.errors import ConfigError
from ldm.rundir import job_overrides, overrides_problem, read_status

IGNORED_OVERRIDES = ("seed",)  # varies within a row: never a row's key



def config_value(cfg: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return None
        cfg = cfg[part]
    return cfg



def same_training(evaluated: dict, metrics: dict) -> bool:
    """Whether an eval.json evaluated this job's own stages: the stage keys it recorded equal the job's."""
    return all(evaluated.get(f"eval/of_{s}_key") == metrics.get(f"{s}/key") for s in ("stage1", "stage2"))


def collect(sweep_dir: Path, eval_file: str = "eval.json") -> tuple[list[dict], list[str]]:
    """One record per job directory (a folder with .hydra/overrides.yaml): overrides, status, metrics.

    Status: the job's `metrics.json` status (ok, diverged, failed), `interrupted` for a run killed while
    `running`, `corrupt` for an unreadable `metrics.json`, `missing` for none.

    A finished job re-evaluated from its checkpoints (`evaluate.py run_dir=<job>`, e.g. after a metric was added)
    has an `eval_file` (relative to the job: eval.json, or <out_dir>/eval.json for an evaluation written elsewhere,
    e.g. with more samples); its values take precedence over metrics.json and the record says so, but only when it
    evaluated this job's own stages (its recorded stage keys are the job's): a leftover eval.json of another job
    that once used the folder is ignored and the record is marked `stale_eval`."""
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
        damaged = overrides_problem(job)
        if damaged:  # which row it belongs to is unknown: listed with the jobs without results
            metrics = {"status": "corrupt", "error": damaged}
        status = metrics["status"]
        evaluated = read_status(job / eval_file) if status == "ok" else {}
        re_evaluated = evaluated.get("status") == "ok"
        stale = re_evaluated and not same_training(evaluated, metrics)
        if stale:  # a leftover of another job that once lived in this folder: its numbers are not this job's
            re_evaluated = False
        if re_evaluated:
            metrics = {**metrics, **evaluated}
        records.append({"job": job.name, "group": tuple((k, o.get(k, "")) for k in swept), "seed": o.get("seed"),
                        "status": status, "error": metrics.get("error", ""), "metrics": metrics,
                        "re_evaluated": re_evaluated, "stale_eval": stale})
    return records, swept
