"""Sweep directory -> ablation table as table.md, table.csv and table.tex.

Cells are the mean over seeds with its 95 % Student-t interval; each row is compared with a reference row (default
`autoencoder=vae`) by the difference of means, its interval and p-value (paired by seed where both rows ran the
same seeds, Welch otherwise; ldm/statistics.py); a column's best is marked only where it differs from the runner-up
(p < 0.05), so two rows within noise of each other are never told apart by bold type."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import yaml

from ldm.analysis import plots, render, statistics
from ldm.analysis.budget import budget_curves, converged_table
from ldm.analysis.collect import IGNORED_OVERRIDES, collect, config_value
from ldm.analysis.columns import contends, direction
from ldm.errors import ConfigError
from ldm.rundir import job_overrides
from ldm.utils.io import atomic_write

DEFAULT_COLUMNS = ["recon/psnr", "recon/rfid", "recon/class_accuracy", "latent/kl_to_prior", "latent/interp_uniformity",
                   "latent/cycle_error", "latent/prior_fid", "gen/fid", "gen/kid", "gen/precision", "gen/recall",
                   "gen/coverage", "gen/classes_covered", "stage1/wall_s", "stage2/wall_s"]
BUDGET_KEYS = [("stage1.max_steps", "stage-1 steps"), ("data.batch_size", "stage-1 batch"),
               ("stage2.max_steps", "stage-2 steps"), ("stage2.batch_size", "stage-2 batch"),
               ("metrics.num_samples", "samples (null = test split)")]


def _per_seed(runs: list[dict], column: str) -> dict:
    """{seed: value} of one row's runs (the job name stands in for a run without a seed: never paired)."""
    return {m["_seed"]: m.get(column) for m in runs if statistics.numbers([m.get(column)])}


def find_reference(rows: list[dict], reference: Optional[str]) -> Optional[int]:
    """Index of the row `reference` names (`key=value[,key=value]`, matched against the row's swept values);
    None gives `autoencoder=vae` when such a row exists. A named reference that matches no row is an error."""
    wanted = reference or "autoencoder=vae"
    pairs = dict(p.split("=", 1) for p in wanted.split(",") if "=" in p)
    if not pairs:
        raise ConfigError(f"table.reference={reference!r} must look like key=value, e.g. autoencoder=vae")
    hits = [i for i, r in enumerate(rows) if all(dict(r["group"]).get(k) == v for k, v in pairs.items())]
    if reference and len(hits) != 1:
        labels = "; ".join(render.row_label(r["group"]) for r in rows)
        raise ConfigError(f"table.reference={reference} matches {len(hits)} rows (rows: {labels}): name one row")
    return hits[0] if len(hits) == 1 else None


def mark_best(rows: list[dict], column: str) -> set[int]:
    """The row with the best mean, if it beats the runner-up: the difference's interval excludes 0 (p < 0.05).
    Rows that do not contend in the column (ldm.analysis.columns.contends) are left out; none is marked where the column
    has no direction, where fewer than 2 rows measured it, or where the top two cannot be told apart."""
    d = direction(column)
    cands = [(r["means"][column], i) for i, r in enumerate(rows)
             if r["means"][column] is not None and r["contends"][column]]
    if not d or len(cands) < 2:
        return set()
    cands.sort(key=lambda vi: -d * vi[0])
    (top, i), (runner, j) = cands[0], cands[1]
    if top == runner:
        return set()
    diff = statistics.difference(rows[i]["seeds"][column], rows[j]["seeds"][column])
    return {i} if diff is not None and diff["p"] is not None and diff["p"] < statistics.ALPHA else set()


def build(sweep_dir: str | Path, columns: Optional[Sequence[str]] = None, title: str = "",
          eval_file: str = "eval.json", name: str = "table", reference: Optional[str] = None,
          converge_on: Optional[str] = "recon/rfid", converge_margin: float = 0.1) -> dict:
    """Write <name>.md / .csv / .tex into `sweep_dir`; returns the rows and the lists of bad jobs. A sweep over a
    step budget also gets <name>_budget.png and <name>_converged.md (each row's converged budget on `converge_on`)."""
    sweep_dir = Path(sweep_dir)
    records, swept = collect(sweep_dir, eval_file)
    if not records:
        raise ConfigError(f"{sweep_dir} holds no job directories with .hydra/overrides.yaml: is it a multirun dir?")
    columns = list(columns or DEFAULT_COLUMNS)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], [])
        if r["status"] == "ok":
            seed = r["seed"] if r["seed"] is not None else f"job{r['job']}"
            groups[r["group"]].append({**r["metrics"], "_seed": seed})
    rows = []
    for group, runs in groups.items():
        cells, summaries = {}, {}
        for c in columns:
            cells[c], summaries[c] = render.cell([m.get(c) for m in runs])
        rows.append({"group": group, "n": len(runs), "cells": cells, "stats": summaries,
                     "means": {c: s["mean"] for c, s in summaries.items()},
                     "stds": {c: s["std"] for c, s in summaries.items()},
                     "seeds": {c: _per_seed(runs, c) for c in columns},
                     "contends": {c: contends(c, runs) for c in columns},
                     "floor_med": statistics.numbers([m.get("eval/fid_floor") for m in runs]),
                     "floor_lo": min(statistics.numbers([m.get("eval/fid_floor_lo") for m in runs]), default=None),
                     "floor_hi": max(statistics.numbers([m.get("eval/fid_floor_hi") for m in runs]), default=None),
                     "floor_n": next((m["eval/fid_floor_n"] for m in runs if m.get("eval/fid_floor_n")), None)})
    best = {c: b for c in columns if (b := mark_best(rows, c))}
    ref = find_reference(rows, reference)
    for i, r in enumerate(rows):
        r["vs_ref"] = {c: (None if ref is None or i == ref else
                           statistics.difference(r["seeds"][c], rows[ref]["seeds"][c])) for c in columns}
    bad = [r for r in records if r["status"] != "ok"]
    first_cfg_path = next((sweep_dir / r["job"] / ".hydra" / "config.yaml" for r in records
                           if (sweep_dir / r["job"] / ".hydra" / "config.yaml").is_file()), None)
    cfg = yaml.safe_load(first_cfg_path.read_text()) if first_cfg_path else {}
    budgets = [(label, config_value(cfg, key)) for key, label in BUDGET_KEYS]
    constant = sorted({f"{k}={v}" for r in records for k, v in job_overrides(sweep_dir / r["job"]).items()
                       if k not in swept and k not in IGNORED_OVERRIDES})
    re_evaluated = [r for r in records if r["re_evaluated"]]
    samplers = sorted({r["metrics"]["eval/sampler"] for r in re_evaluated if r["metrics"].get("eval/sampler")})
    result = {"rows": rows, "columns": columns, "best": best, "bad": bad, "reference": ref, "swept": swept,
              "budgets": budgets, "constant": constant, "re_evaluated": len(re_evaluated), "jobs": len(records),
              "samplers": samplers, "stale": [r["job"] for r in records if r.get("stale_eval")],
              "eval_file": eval_file, "num_samples": sorted({r["metrics"].get("eval/num_samples") for r in re_evaluated
                                                             if r["metrics"].get("eval/num_samples")})}
    render.write(sweep_dir, result, title or sweep_dir.name, name)
    result["figures"] = plots.plot(result, sweep_dir, name)
    curves = budget_curves(result, converge_on, converge_margin) if converge_on else None
    if curves:  # a budget sweep: the curves, and each row's converged budget
        result["budget"] = curves
        result["figures"].append(plots.plot_budget(curves, sweep_dir, name))
        atomic_write(sweep_dir / f"{name}_converged.md", lambda tmp: Path(tmp).write_text(converged_table(curves)))
    return result


def inside(value: str, key: str, plain_name: bool = False) -> str:
    """A file name (or relative path) that stays inside the table's directory; ConfigError otherwise."""
    p = Path(str(value))
    bad = p.is_absolute() or not p.parts or ".." in p.parts or (plain_name and (len(p.parts) != 1 or p.name != value))
    if bad:
        what = "a plain file name" if plain_name else "a relative path without '..'"
        raise ConfigError(f"{key}={value} must be {what}: outputs stay inside table.dir")
    return str(value)


def wandb_table(csv_path: Path):
    """A table.csv as a `wandb.Table` (header row -> columns; cells stay the CSV's text, as the table shows them)."""
    import csv

    import wandb

    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    return wandb.Table(columns=rows[0], data=rows[1:])


def log_to_wandb(sweep_dir: Path, name: str, project: str) -> str:
    """The sweep's table (and its figures) as one wandb run beside the sweep's own runs: grouped with them (the
    sweep's task name, which `ldm.run.tracking.run_group` gives every job), job_type `sweep-table`, the sweep folder
    in its config. WANDB_MODE=offline works (then `wandb sync`). Returns the run's directory."""
    import wandb

    sweep_dir = Path(sweep_dir)
    group = None
    for cfg_file in sorted(sweep_dir.glob("*/.hydra/config.yaml")):
        group = (yaml.safe_load(cfg_file.read_text()) or {}).get("task_name")
        if group:
            break
    run = wandb.init(project=project, group=str(group or sweep_dir.name), job_type="sweep-table",
                     name=f"{name}-{sweep_dir.name}", dir=str(sweep_dir), reinit="create_new",
                     config={"sweep": sweep_dir.name, "sweep_dir": str(sweep_dir)},
                     settings=wandb.Settings(console="off"))  # nothing to capture: the table is the whole run
    try:
        payload = {f"{name}/table": wandb_table(sweep_dir / f"{name}.csv")}
        for png in sorted(sweep_dir.glob(f"{name}_*.png")):
            payload[f"{name}/{png.stem}"] = wandb.Image(str(png))
        run.log(payload)
        return str(run.dir)
    finally:
        run.finish()
