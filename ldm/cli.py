"""What train.py, evaluate.py and sample.py call, under the task wrapper (status, one `error:` line, exit codes).

Dispatch only: evaluate.py's modes are one run (`ldm.run.evaluate`), a sweep's table (`ldm.analysis.tables`,
optionally re-evaluating each job first) and a claims profile (`ldm.analysis.claims.runner`). This is the one
module that imports both the run and the analysis packages.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig

log = logging.getLogger(__name__)
SHOWN = ("eval/evaluator_acc", "eval/fid_floor", "recon/psnr", "recon/rfid", "recon/class_accuracy",
         "latent/prior_fid", "gen/fid", "gen/kid", "gen/classes_covered")


def train(cfg: DictConfig) -> Optional[float]:
    """train.py: one run (`ldm.run.train`); returns `optimized_metric` for a Hydra sweeper."""
    from ldm.run import train as job

    return job.main(cfg)


def sample(cfg: DictConfig) -> Optional[dict]:
    """sample.py: N samples of a run or an export (`ldm.run.sample`)."""
    from ldm.run import sample as job

    return job.main(cfg)


def evaluate(cfg: DictConfig) -> Optional[float]:
    """evaluate.py: one of its three modes (module docstring); returns gen/fid where it was measured."""
    from ldm.run.task import run_task

    result = run_task(cfg, _evaluate) or {}
    for k in SHOWN:
        if k in result:
            log.info("  %-22s %s", k, f"{result[k]:.4g}" if isinstance(result[k], float) else result[k])
    return result.get("gen/fid")


def _evaluate(cfg: DictConfig, report: Any) -> dict:
    from ldm.errors import ConfigError
    from ldm.run import schema
    from ldm.run.evaluate import evaluate_run, export_run

    schema.validate(cfg, schema.EVALUATE)
    schema.check_memory(cfg.metrics.get("num_samples") if cfg.get("metrics") else None)

    if cfg.get("claims"):
        from ldm.analysis.claims.runner import claims_report
        from ldm.run.real_images import grid

        return claims_report(cfg, real=grid)
    if cfg.get("table") and cfg.table.get("dir"):
        table(cfg)
        return {}
    if not cfg.run_dir:
        raise ConfigError("pass run_dir=<train.py run directory> (or table.dir=<multirun directory>)")
    if cfg.get("export"):
        return export_run(cfg, Path(cfg.run_dir), Path(cfg.export))
    return evaluate_run(cfg, Path(cfg.run_dir), Path(cfg.out_dir))


def table(cfg: DictConfig) -> None:
    """`evaluate.py table.dir=<multirun>`: (with table.reevaluate=true) each finished job evaluated again from its
    checkpoints into <job>/<table.eval_file>, then the sweep's table and figures."""
    from ldm.analysis import tables
    from ldm.analysis.collect import collect
    from ldm.errors import UserError
    from ldm.run.evaluate import evaluate_run
    from ldm.run.task import one_line
    from ldm.utils.config import plain
    from ldm.utils.progress import progress

    t = cfg.table
    out = Path(t.dir)
    name = tables.inside(t.name, "table.name", plain_name=True)
    eval_file = tables.inside(t.eval_file, "table.eval_file")
    if t.reevaluate:
        records, _ = collect(out, eval_file)
        done = [r for r in records if r["status"] == "ok"]
        for i, r in enumerate(progress(done, desc="re-evaluating", unit="job", leave=True)):
            job = out / r["job"]
            log.info("re-evaluating job %s (%d/%d) into %s", r["job"], i + 1, len(done), job / eval_file)
            try:
                evaluate_run(cfg, job, (job / eval_file).parent)
            except UserError as e:  # one bad job does not cost the others their table
                log.error("job %s not re-evaluated: %s", r["job"], one_line(e))
    result = tables.build(out, plain(t.columns), t.title, eval_file=eval_file, name=name, reference=t.reference,
                          converge_on=t.converge_on, converge_margin=float(t.converge_margin))
    print((out / f"{name}.md").read_text())
    if t.get("wandb"):
        log.info("logged the table to wandb: %s", tables.log_to_wandb(out, name, str(t.wandb_project)))
    log.info("wrote %s, %s.csv, %s.tex (%d rows, %d failed/missing jobs)", out / f"{name}.md", name, name,
             len(result["rows"]), len(result["bad"]))
