"""Sweep directory -> ablation table (mean ± std (n) over seeds) as table.md, table.csv and table.tex."""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path
from typing import Optional, Sequence

import yaml

from ldm.errors import ConfigError
from ldm.task import read_status
from ldm.utils.io import atomic_write

DEFAULT_COLUMNS = ["recon/psnr", "recon/rfid", "recon/class_accuracy", "latent/kl_to_prior", "latent/interp_uniformity",
                   "latent/cycle_error", "latent/prior_fid", "gen/fid", "gen/kid", "gen/precision", "gen/recall",
                   "gen/coverage", "gen/classes_covered", "stage1/wall_s", "stage2/wall_s"]
HIGHER_IS_BETTER = ("psnr", "ssim", "precision", "recall", "coverage", "density", "classes_covered", "accuracy",
                    "confidence", "evaluator_acc")
LOWER_IS_BETTER = ("mse", "fid", "kid", "kl", "ppl", "uniformity", "cycle_error", "wall_s", "sec_per_sample",
                   "val_loss")
IGNORED_OVERRIDES = ("seed",)
BUDGET_KEYS = [("stage1.max_steps", "stage-1 steps"), ("data.batch_size", "stage-1 batch"),
               ("stage2.max_steps", "stage-2 steps"), ("stage2.batch_size", "stage-2 batch"),
               ("metrics.num_samples", "samples (null = test split)")]


def direction(column: str) -> int:
    """+1 if higher is better, -1 if lower, 0 if neither is clear."""
    name = column.split("/")[-1]
    if any(name.endswith(h) or name == h for h in HIGHER_IS_BETTER):
        return 1
    if any(k in name for k in LOWER_IS_BETTER):
        return -1
    return 0


def contends(column: str, runs: list[dict]) -> bool:
    """Whether a row's value in `column` measures something it can be best at: not the wall time of a stage
    that came from the cache or a checkpoint (not timed here), not the reconstruction of a row with nothing to
    reconstruct through (identity's exact, sentinel-PSNR reconstruction)."""
    stage = column.split("/")[0]
    if column.endswith("wall_s") and stage in ("stage1", "stage2"):
        return all(m.get(f"{stage}/source", "trained") in ("trained", "resumed") for m in runs)
    if column.startswith("recon/") or column == "latent/cycle_error":
        return not all(m.get("stage1/params") == 0 for m in runs)
    return True


def _overrides(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "overrides.yaml"
    try:
        items = yaml.safe_load(path.read_text()) or [] if path.is_file() else []
    except (yaml.YAMLError, OSError):
        items = []  # a damaged job still gets its row in the list of jobs without results
    out = {}
    for item in items:
        k, _, v = item.lstrip("+~").partition("=")
        out[k] = v
    return out


def _get(cfg: dict, dotted: str):
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
    all_overrides = [_overrides(j) for j in jobs]
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


def _fmt(values: list[float]) -> tuple[str, Optional[float], Optional[float]]:
    """(cell text, mean, sample std or None when n < 2) of the numeric values."""
    vals = [v for v in values if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "–", None, None
    mean = statistics.fmean(vals)
    digits = 3 if abs(mean) < 10 else (2 if abs(mean) < 100 else 1)
    if len(vals) == 1:
        return f"{mean:.{digits}f} (1)", mean, None
    std = statistics.stdev(vals)
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({len(vals)})", mean, std


def build(sweep_dir: str | Path, columns: Optional[Sequence[str]] = None, title: str = "",
          eval_file: str = "eval.json", name: str = "table") -> dict:
    """Write <name>.md / .csv / .tex into `sweep_dir`; returns the rows and the lists of bad jobs."""
    sweep_dir = Path(sweep_dir)
    records, swept = collect(sweep_dir, eval_file)
    if not records:
        raise ConfigError(f"{sweep_dir} holds no job directories with .hydra/overrides.yaml: is it a multirun dir?")
    columns = list(columns or DEFAULT_COLUMNS)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(r["group"], [])
        if r["status"] == "ok":
            groups[r["group"]].append(r["metrics"])
    rows = []
    for group, runs in groups.items():
        cells, means, stds = {}, {}, {}
        for c in columns:
            cells[c], means[c], stds[c] = _fmt([m.get(c) for m in runs])
        rows.append({"group": group, "n": len(runs), "cells": cells, "means": means, "stds": stds,
                     "contends": {c: contends(c, runs) for c in columns},
                     "floor": _fmt([m.get("eval/fid_floor") for m in runs])[0],
                     "floor_n": next((m["eval/fid_floor_n"] for m in runs if m.get("eval/fid_floor_n")), None)})
    best = {}
    for c in columns:
        d = direction(c)
        vals = [(r["means"][c], i) for i, r in enumerate(rows) if r["means"][c] is not None and r["contends"][c]]
        if d and len(vals) > 1:
            top = (max if d > 0 else min)(v for v, _ in vals)
            best[c] = {i for v, i in vals if v == top}  # ties: every row that reaches it
    bad = [r for r in records if r["status"] != "ok"]
    first_cfg_path = next((sweep_dir / r["job"] / ".hydra" / "config.yaml" for r in records
                           if (sweep_dir / r["job"] / ".hydra" / "config.yaml").is_file()), None)
    cfg = yaml.safe_load(first_cfg_path.read_text()) if first_cfg_path else {}
    budgets = [(label, _get(cfg, key)) for key, label in BUDGET_KEYS]
    constant = sorted({f"{k}={v}" for r in records for k, v in _overrides(sweep_dir / r["job"]).items()
                       if k not in swept and k not in IGNORED_OVERRIDES})
    re_evaluated = [r for r in records if r["re_evaluated"]]
    samplers = sorted({r["metrics"]["eval/sampler"] for r in re_evaluated if r["metrics"].get("eval/sampler")})
    result = {"rows": rows, "columns": columns, "best": best, "bad": bad, "swept": swept, "budgets": budgets,
              "constant": constant, "re_evaluated": len(re_evaluated), "jobs": len(records), "samplers": samplers,
              "eval_file": eval_file, "num_samples": sorted({r["metrics"].get("eval/num_samples") for r in re_evaluated
                                                             if r["metrics"].get("eval/num_samples")})}
    _write(sweep_dir, result, title or sweep_dir.name, name)
    return result


def _label(group: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in group) or "(all)"


def _write(sweep_dir: Path, t: dict, title: str, name: str = "table") -> None:
    cols, rows, best = t["columns"], t["rows"], t["best"]
    floor_n = sorted({r["floor_n"] for r in rows if r["floor_n"]})
    head = ["config"] + cols + ["FID floor" + (f" (n={'/'.join(map(str, floor_n))})" if floor_n else "")]
    # markdown
    md = [f"### {title}", "",
          "Budgets: " + ", ".join(f"{label} {v}" for label, v in t["budgets"] if v is not None or "samples" in label),
          ("Shared overrides: " + " ".join(t["constant"])) if t["constant"] else "",
          "Cells: mean ± std (number of seeds); **bold** = best in column among rows that measured it (not the "
          "wall time of a cached stage, not identity's exact reconstruction). FID floor: real test vs train at the "
          "same feature extractor.",
          (f"Re-evaluated from checkpoints ({t['eval_file']} over metrics.json): {t['re_evaluated']} of {t['jobs']} "
           "jobs" + (f", sampled with {', '.join(t['samplers'])}" if t["samplers"] else "")
           + (f", {'/'.join(map(str, t['num_samples']))} samples" if t["num_samples"] else "") + ".")
          if t["re_evaluated"] else "",
          "",
          "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for i, r in enumerate(rows):
        cells = [f"**{r['cells'][c]}**" if i in best.get(c, ()) else r["cells"][c] for c in cols]
        md.append("| " + " | ".join([_label(r["group"])] + cells + [r["floor"]]) + " |")
    if t["bad"]:
        md += ["", "Jobs without results (failed, diverged, interrupted, corrupt or missing):"]
        md += [f"- job {b['job']} ({_label(b['group'])}, seed={b['seed']}): {b['status']}"
               + (f": {b['error']}" if b["error"] else "") for b in t["bad"]]
    atomic_write(sweep_dir / f"{name}.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n"))
    # csv: machine-readable means, stds and counts
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["config", "n"] + [h for c in cols for h in (c, f"{c}_std")])
    blank = lambda v: "" if v is None else v  # noqa: E731
    for r in rows:
        w.writerow([_label(r["group"]), r["n"]] + [blank(d[c]) for c in cols for d in (r["means"], r["stds"])])
    atomic_write(sweep_dir / f"{name}.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))
    # latex
    esc = lambda s: s.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")  # noqa: E731
    tex = [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
           " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        cells = [(r"\textbf{" + esc(r["cells"][c]) + "}") if i in best.get(c, ()) else esc(r["cells"][c])
                 for c in cols]
        tex.append(" & ".join([esc(_label(r["group"]))] + cells + [esc(r["floor"])]) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}"]
    atomic_write(sweep_dir / f"{name}.tex", lambda tmp: Path(tmp).write_text("\n".join(tex) + "\n"))
