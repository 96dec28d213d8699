"""Running a claims profile: each experiment's train.py multirun (the missing ones only), its tables, the verdicts
and REPORT.md (`evaluate.py claims=<profile>`)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from omegaconf import DictConfig

from ldm.analysis import tables
from ldm.analysis.claims import estimate, figures, publish, render
from ldm.analysis.claims.criteria import Sweeps, controls, metrics_of, verdicts
from ldm.analysis.collect import collect
from ldm.analysis.sweep_jobs import count_jobs
from ldm.errors import ConfigError
from ldm.utils.config import plain
from ldm.utils.io import atomic_write, write_json

log = logging.getLogger(__name__)
RealGrid = Callable[[Path, Path], Optional[Path]]  # (a job's config.yaml, where to draw) -> the PNG, or None


# ---- running a profile ----------------------------------------------------------------------------------------
def jobs_of(cfg: dict) -> dict[str, list[str]]:
    """experiment -> the train.py multirun overrides of its sweep (common + the experiment's + the seeds)."""
    return {name: [*(cfg.get("common") or []), *overrides, f"seed={cfg['seeds']}"]
            for name, overrides in (cfg.get("experiments") or {}).items()}


def sweep_complete(sweep_dir: Path, expected: int) -> bool:
    """Whether a sweep directory holds `expected` jobs, every one finished ok (then it is not run again)."""
    if not sweep_dir.is_dir():
        return False
    records, _ = collect(sweep_dir)
    return len(records) >= expected and all(r["status"] == "ok" for r in records)


def command(name: str, overrides: list[str], root: Path, n_jobs: int,
            launcher: Optional[list[str]] = None) -> list[str]:
    """One experiment's train.py multirun: joblib with `n_jobs` side by side, or the profile's `launcher`
    overrides (e.g. submitit on SLURM: [hydra/launcher=submitit_slurm, hydra.launcher.gpus_per_node=1, ...])."""
    launch = list(launcher) if launcher else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
    # +overwrite: an incomplete sweep is run again into its own folder (finished stages come from the stage cache)
    return ["train.py", "-m", *overrides, f"hydra.sweep.dir={root / name}", "+overwrite=true", *launch]


def run_experiments(todo: list[str], n_jobs: int, launch: Callable[[str, int], int],
                    sizes: Optional[dict[str, float]] = None) -> dict[str, int]:
    """Run the missing experiments (their names) with `n_jobs` CPUs; `launch(name, jobs_side_by_side)` runs
    one experiment's multirun and returns its exit status. One experiment alone gets every CPU; several run
    side by side, one job at a time each, largest first (by `sizes`, e.g. the estimated job-seconds), each CPU
    taking the next experiment when its current one ends. One experiment per CPU (not one multirun after the
    other, each with n_jobs) keeps both CPUs busy through the tail of a sweep whose job count is odd: the quick
    profile's 3-job sweeps left one CPU idle for most of their length. Returns {name: exit status}."""
    from concurrent.futures import ThreadPoolExecutor

    order = sorted(todo, key=lambda name: -(sizes or {}).get(name, 0.0))  # stable: the profile's order among equals
    lanes = max(1, min(n_jobs, len(order)))
    if lanes == 1:
        return {name: launch(name, n_jobs) for name in order}
    with ThreadPoolExecutor(lanes) as pool:
        futures = {name: pool.submit(launch, name, max(1, n_jobs // lanes)) for name in order}
        return {name: f.result() for name, f in futures.items()}


def claims_report(cfg: DictConfig, real: Optional[RealGrid] = None) -> dict:
    """`evaluate.py claims=<profile>`: (with claims.run=true) run the profile's missing sweeps, then decide every
    claim from the pre-stated criteria and write <claims.dir>/REPORT.md and verdicts.json. `real(config.yaml,
    png)` draws the real test images of a job's dataset (the entry passes ldm.run.real_images.grid: analysis
    builds no data); without it the sample figures show the rows only."""
    profile = plain(cfg.claims)
    root = Path(profile["dir"])
    if profile.get("results"):  # a campaign: records, not sweeps (ldm.analysis.claims.campaign)
        from ldm.analysis.claims import campaign

        return campaign.run(profile, root, real)
    jobs = jobs_of(profile)
    n_jobs = int(profile.get("n_jobs") or len(os.sched_getaffinity(0)))
    commands, todo = [], []
    for name, overrides in jobs.items():
        shown = command(name, overrides, Path(os.path.relpath(root)), n_jobs,  # portable in the report
                               profile.get("launcher"))
        commands.append(".venv/bin/python " + " ".join(f"'{c}'" if "," in c else c for c in shown))
        expected = count_jobs(overrides)
        done = sweep_complete(root / name, expected)
        log.info("experiment %s: %d jobs, %s", name, expected, "complete" if done else "to run")
        if profile.get("dry_run"):
            print(f"{name}: {expected} jobs{' (complete)' if done else ''}: {commands[-1]}")
        elif profile.get("run") and not done:
            todo.append(name)
    bench = Path(os.environ.get("LDM_ROOT", ".")) / "benchmarks" / "results.json"
    if todo:
        root.mkdir(parents=True, exist_ok=True)

        def launch(name: str, side_by_side: int) -> int:
            cmd = command(name, jobs[name], root, side_by_side, profile.get("launcher"))
            log.info("experiment %s: started, %d job(s) at a time (output: %s)", name, side_by_side,
                     root / f"{name}.log")
            start = time.time()
            with open(root / f"{name}.log", "a") as out:
                code = subprocess.run([sys.executable, *cmd], cwd=os.environ.get("LDM_ROOT", "."), stdout=out,
                                      stderr=subprocess.STDOUT).returncode
            if code != 0:  # failed jobs stay failed in the sweep; their claims say so
                log.error("experiment %s: train.py exited %d; its failed jobs are named in the report (%s)",
                          name, code, root / f"{name}.log")
            log.info("experiment %s: ended in %.1f min", name, (time.time() - start) / 60)
            return code

        lanes = 1 if profile.get("launcher") else n_jobs  # a cluster launcher queues every sweep's jobs itself
        sizes = estimate.estimate_profile_s({n: jobs[n] for n in todo}, 1, estimate.measured_rates(bench))
        run_experiments(todo, lanes, launch, sizes)
    if profile.get("dry_run"):
        est = estimate.estimate_profile_s(jobs, n_jobs, estimate.measured_rates(bench))
        wall, gpu_h = est.pop("wall"), est.pop("gpu_hours")
        print(f"{sum(count_jobs(o) for o in jobs.values())} jobs in {len(jobs)} experiments, "
              f"{n_jobs} at a time: about {wall / 60:.0f} min here ("
              + ", ".join(f"{k} {v / 60:.0f} job-min" for k, v in est.items())
              + "; from the job rates in benchmarks/results.json, cached stages counted as run); "
              f"one GPU: about {gpu_h:.1f} GPU-hours (the bench plan's modelled step time, CPU-measured "
              "evaluation: an upper bound)")
        return {}
    return decide(profile, root, commands + [f".venv/bin/python evaluate.py claims={profile['profile']}"],
                  real=real)


def decide(profile: dict, root: Path, commands: list[str], campaign: Optional[list[str]] = None,
           real: Optional[RealGrid] = None) -> dict:
    """The tables, verdicts, controls and REPORT.md of the sweeps under `root` (a profile's sweeps, or the view a
    campaign builds from its records; `campaign`: the report's lines on those records; `real`: draws a dataset's
    real test images beside the samples, see `claims_report`)."""
    build_tables(profile, root)
    sweeps = Sweeps(root)  # every sweep read once, for the claims and the controls
    findings = verdicts(profile, root, sweeps)
    checks = controls(profile, root, sweeps)
    root.mkdir(parents=True, exist_ok=True)
    for name, f in findings.items():  # C0's ranking figure, before the report that links it
        if "ranking" in f.numbers and f.verdict != "undecided":
            figures.ranking_figure(f, root, root / f"{name}_ranking.png")
    reads = {name: render.claim_numbers(c["criterion"], sweeps) for name, c in profile["claims"].items()}
    for name, numbers in reads.items():  # one labelled panel per metric each claim reads
        figures.claim_figure(name, numbers, root / f"{name}_metrics.png")
    drawn: dict = {}
    shutil.rmtree(root / "_real", ignore_errors=True)  # the real-data grids are drawn anew with each report
    for name, c in profile["claims"].items():  # each row's samples at one seed, beside real data
        figures.samples_figure(name, c["criterion"], sweeps, real, root / f"{name}_samples.png", drawn)
    text = render.report(profile, root, findings, commands, checks, campaign, reads)
    atomic_write(root / "REPORT.md", lambda tmp: Path(tmp).write_text(text))
    write_json(root / "verdicts.json", render.json_ready(findings))
    write_json(root / "controls.json", render.json_ready(checks))
    print(text)
    log.info("wrote %s and verdicts.json", root / "REPORT.md")
    if profile.get("wandb"):
        publish.log_to_wandb(profile, root, findings)
    return {f"claims/{k}": v.verdict for k, v in findings.items()}


def build_tables(profile: dict, root: Path) -> None:
    """Each experiment's sweep table (ldm/analysis/tables.py: intervals, tests against the reference row, figures)
    next to its jobs, with the default columns plus every metric the claims read from it; a sweep with no finished job
    is skipped (its claims say why)."""
    for exp in (profile.get("experiments") or {}):
        if not (root / exp).is_dir():
            continue
        cols = list(tables.DEFAULT_COLUMNS) + list(profile.get("table_columns") or [])
        for c in (profile.get("claims") or {}).values():
            cols += metrics_of(c["criterion"], exp)
        cols = list(dict.fromkeys(cols))  # each column once, in order
        try:
            tables.build(root / exp, cols, title=f"{profile['profile']} profile: {exp}")
        except ConfigError as e:
            log.warning("no table for experiment %s: %s", exp, e)
