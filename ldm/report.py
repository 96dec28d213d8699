"""evaluate.py's logic: evaluate a finished run (or an export), export a run, or build a sweep's table."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from ldm.diffusion.samplers import check_sampler
from ldm.errors import ConfigError, UserError
from ldm.evaluation import evaluate, upgrade_metrics
from ldm.models import device_for, export, load
from ldm.task import one_line, run_task
from ldm.utils.config import build, plain
from ldm.utils.io import write_json
from ldm.utils.progress import progress

log = logging.getLogger(__name__)


def overridden(prefix: str) -> list[str]:
    """Keys below `prefix` that this command line sets (`metrics.num_samples=1000` and `metrics/features=x`
    give `num_samples` and `features`)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    keys = [o.lstrip("+~").split("=", 1)[0] for o in HydraConfig.get().overrides.task]
    return [k[len(prefix) + 1:] for k in keys if k.startswith((prefix + ".", prefix + "/"))]


def metrics_config(cfg: DictConfig, run_cfg: DictConfig) -> dict:
    """The run's own metrics config (what it was evaluated with when it finished), with what this command line
    overrides; the sampling seed is the run's unless `seed=` is given."""
    merged = OmegaConf.create(upgrade_metrics(plain(run_cfg.get("metrics")) or plain(cfg.metrics)))
    for key in overridden("metrics"):
        dotted = key.replace("/", ".")
        OmegaConf.update(merged, dotted, OmegaConf.select(cfg.metrics, dotted), merge=False)
    metrics = OmegaConf.to_container(merged, resolve=True)
    metrics["seed"] = int(cfg.seed) if cfg.get("seed") is not None else int(run_cfg.get("seed") or 0)
    return metrics


def evaluate_run(cfg: DictConfig, run_dir: Path, out_dir: Path) -> dict:
    """Evaluate one finished run (a train.py run directory or an export); writes <out_dir>/eval.json and figures."""
    model = load(run_dir, cfg.checkpoint)
    ld, info = model.diffusion, dict(model.info)
    if ld is not None and cfg.get("sampler"):
        ld.sampler = build(plain(cfg.sampler))
        check_sampler(ld.sampler, ld.process.num_timesteps)
        info["eval/sampler"] = cfg.sampler._target_.rsplit(".", 1)[-1]
    datamodule = build(model.config.data)
    datamodule.setup()
    metrics = metrics_config(cfg, model.config)
    info["eval/seed"] = metrics["seed"]
    t0 = time.perf_counter()
    result = evaluate(model.autoencoder, ld, datamodule, metrics, model.config.data, cfg.paths.cache_dir, out_dir,
                      device_for(cfg.device))
    result.update(info)
    result["eval/wall_s"] = time.perf_counter() - t0
    write_json(out_dir / "eval.json", {"status": "ok", **result})
    log.info("wrote %s", out_dir / "eval.json")
    return result


def export_run(cfg: DictConfig, run_dir: Path, out: Path) -> dict:
    """`evaluate.py run_dir=<run> export=<dir>`: the run's two stages and config as one loadable directory."""
    model = load(run_dir, cfg.checkpoint)
    datamodule = build(model.config.data)
    datamodule.setup()
    model.class_names = datamodule.class_names
    export(model, out, source=str(run_dir))
    log.info("exported %s to %s (load it with ldm.models.load, sample it with sample.py run_dir=%s)",
             run_dir, out, out)
    return {"export": str(out)}


def _relative(value: str, key: str, plain_name: bool = False) -> str:
    """A file name (or relative path) that stays inside its directory; ConfigError otherwise."""
    p = Path(str(value))
    bad = p.is_absolute() or not p.parts or ".." in p.parts or (plain_name and (len(p.parts) != 1 or p.name != value))
    if bad:
        what = "a plain file name" if plain_name else "a relative path without '..'"
        raise ConfigError(f"{key}={value} must be {what}: outputs stay inside table.dir")
    return str(value)


def table(cfg: DictConfig) -> None:
    from ldm import tables

    out = Path(cfg.table.dir)
    name = _relative(cfg.table.name, "table.name", plain_name=True)
    eval_file = _relative(cfg.table.eval_file, "table.eval_file")
    if cfg.table.reevaluate:
        records, _ = tables.collect(out, eval_file)
        done = [r for r in records if r["status"] == "ok"]
        for i, r in enumerate(progress(done, desc="re-evaluating", unit="job", leave=True)):
            job = out / r["job"]
            log.info("re-evaluating job %s (%d/%d) into %s", r["job"], i + 1, len(done), job / eval_file)
            try:
                evaluate_run(cfg, job, (job / eval_file).parent)
            except UserError as e:  # one bad job does not cost the others their table
                log.error("job %s not re-evaluated: %s", r["job"], one_line(e))
    result = tables.build(out, plain(cfg.table.columns), cfg.table.title, eval_file=eval_file, name=name,
                          reference=cfg.table.get("reference"), converge_on=cfg.table.get("converge_on", "recon/rfid"),
                          converge_margin=float(cfg.table.get("converge_margin", 0.1)))
    print((out / f"{name}.md").read_text())
    log.info("wrote %s, %s.csv, %s.tex (%d rows, %d failed/missing jobs)", out / f"{name}.md", name, name,
             len(result["rows"]), len(result["bad"]))


def claims_report(cfg: DictConfig) -> dict:
    """`evaluate.py claims=<profile>`: (with claims.run=true) run the profile's missing sweeps, then decide every
    claim from the pre-stated criteria and write <claims.dir>/REPORT.md and verdicts.json."""
    import os
    import subprocess
    import sys

    from ldm import claims

    profile = plain(cfg.claims)
    root = Path(profile["dir"])
    jobs = claims.jobs_of(profile)
    n_jobs = int(profile.get("n_jobs") or len(os.sched_getaffinity(0)))
    commands, todo = [], []
    for name, overrides in jobs.items():
        shown = claims.command(name, overrides, Path(os.path.relpath(root)), n_jobs,  # portable in the report
                               profile.get("launcher"))
        commands.append(".venv/bin/python " + " ".join(f"'{c}'" if "," in c else c for c in shown))
        expected = claims.count_jobs(overrides)
        done = claims.sweep_complete(root / name, expected)
        log.info("experiment %s: %d jobs, %s", name, expected, "complete" if done else "to run")
        if profile.get("dry_run"):
            print(f"{name}: {expected} jobs{' (complete)' if done else ''}: {commands[-1]}")
        elif profile.get("run") and not done:
            todo.append(name)
    bench = Path(os.environ.get("LDM_ROOT", ".")) / "benchmarks" / "results.json"
    if todo:
        root.mkdir(parents=True, exist_ok=True)

        def launch(name: str, side_by_side: int) -> int:
            cmd = claims.command(name, jobs[name], root, side_by_side, profile.get("launcher"))
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
        sizes = claims.estimate_profile_s({n: jobs[n] for n in todo}, 1, claims.measured_rates(bench))
        claims.run_experiments(todo, lanes, launch, sizes)
    if profile.get("dry_run"):
        est = claims.estimate_profile_s(jobs, n_jobs, claims.measured_rates(bench))
        wall, gpu_h = est.pop("wall"), est.pop("gpu_hours")
        print(f"{sum(claims.count_jobs(o) for o in jobs.values())} jobs in {len(jobs)} experiments, "
              f"{n_jobs} at a time: about {wall / 60:.0f} min here ("
              + ", ".join(f"{k} {v / 60:.0f} job-min" for k, v in est.items())
              + "; from the job rates in benchmarks/results.json, cached stages counted as run); "
              f"one GPU: about {gpu_h:.1f} GPU-hours (the bench plan's modelled step time, CPU-measured "
              "evaluation: an upper bound)")
        return {}
    build_tables(profile, root)
    findings = claims.verdicts(profile, root)
    text = claims.report(profile, root, findings, commands + [f".venv/bin/python evaluate.py claims="
                                                              f"{profile.get('profile', '?')}"])
    root.mkdir(parents=True, exist_ok=True)
    from ldm.utils.io import atomic_write

    atomic_write(root / "REPORT.md", lambda tmp: Path(tmp).write_text(text))
    write_json(root / "verdicts.json", claims.json_ready(findings))
    print(text)
    log.info("wrote %s and verdicts.json", root / "REPORT.md")
    if profile.get("wandb"):
        log_claims_to_wandb(profile, root, findings)
    return {f"claims/{k}": v.verdict for k, v in findings.items()}


def build_tables(profile: dict, root: Path) -> None:
    """Each experiment's sweep table (ldm/tables.py: intervals, tests against the reference row, figures) next to
    its jobs, with the default columns plus every metric the claims read from it; a sweep with no finished job
    is skipped (its claims say why)."""
    from ldm import claims, tables

    for exp in (profile.get("experiments") or {}):
        if not (root / exp).is_dir():
            continue
        cols = list(tables.DEFAULT_COLUMNS) + list(profile.get("table_columns") or [])
        for c in (profile.get("claims") or {}).values():
            cols += claims.metrics_of(c["criterion"], exp)
        cols = list(dict.fromkeys(cols))  # each column once, in order
        try:
            tables.build(root / exp, cols, title=f"{profile.get('profile', '?')} profile: {exp}")
        except ConfigError as e:
            log.warning("no table for experiment %s: %s", exp, e)


def log_claims_to_wandb(profile: dict, root: Path, findings: dict) -> None:
    """The report as one wandb run (job_type claims-report, grouped with the sweeps it read): the verdicts and
    each experiment's table as wandb.Table, every figure as an image, REPORT.md as a text artifact."""
    import csv

    import wandb

    run = wandb.init(project=profile.get("wandb_project", "ldm"), group=f"claims/{root.name}",
                     job_type="claims-report", name=f"claims-{profile.get('profile', root.name)}",
                     dir=str(root), config={"profile": profile.get("profile"), "dir": str(root)})
    verdicts = wandb.Table(columns=["claim", "statement", "verdict", "numbers"])
    for name, f in findings.items():
        verdicts.add_data(name, str(profile["claims"][name].get("statement", "")).strip(), f.verdict, f.text)
    payload = {"claims/verdicts": verdicts}
    for exp in (profile.get("experiments") or {}):
        table_csv = root / exp / "table.csv"
        if table_csv.is_file():
            rows = list(csv.reader(table_csv.open()))
            payload[f"claims/{exp}/table"] = wandb.Table(columns=rows[0], data=rows[1:])
        for png in sorted((root / exp).glob("table_*.png")):
            payload[f"claims/{exp}/{png.stem}"] = wandb.Image(str(png))
    run.log(payload)
    art = wandb.Artifact(f"claims-report-{profile.get('profile', 'profile')}", type="report")
    art.add_file(str(root / "REPORT.md"))
    run.log_artifact(art)
    run.summary.update({f"verdict/{k}": v.verdict for k, v in findings.items()})
    run.finish()


def _task(cfg: DictConfig, report: Any) -> dict:
    if cfg.get("claims"):
        return claims_report(cfg)
    if cfg.get("table") and cfg.table.get("dir"):
        table(cfg)
        return {}
    if not cfg.run_dir:
        raise ConfigError("pass run_dir=<train.py run directory> (or table.dir=<multirun directory>)")
    if cfg.get("export"):
        return export_run(cfg, Path(cfg.run_dir), Path(cfg.export))
    return evaluate_run(cfg, Path(cfg.run_dir), Path(cfg.out_dir))


def main(cfg: DictConfig) -> Optional[float]:
    """Entry point behind evaluate.py, under the task wrapper (one `error:` line and exit 2 on bad input)."""
    result = run_task(cfg, _task) or {}
    for k in ("eval/evaluator_acc", "eval/fid_floor", "recon/psnr", "recon/rfid", "recon/class_accuracy",
              "latent/prior_fid", "gen/fid", "gen/kid", "gen/classes_covered"):
        if k in result:
            log.info("  %-22s %s", k, f"{result[k]:.4g}" if isinstance(result[k], float) else result[k])
    return result.get("gen/fid")
