"""Sweep directory -> ablation table as table.md, table.csv and table.tex.

Cells are the mean over seeds with its 95 % Student-t interval; each row is compared with a reference row (default
`autoencoder=vae`) by the difference of means, its interval and p-value (paired by seed where both rows ran the
same seeds, Welch otherwise; ldm/stats.py); a column's best is marked only where it differs from the runner-up
(p < 0.05), so two rows within noise of each other are never told apart by bold type."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional, Sequence

import yaml

from ldm import stats
from ldm.errors import ConfigError
from ldm.task import read_status
from ldm.utils.io import atomic_write

DEFAULT_COLUMNS = ["recon/psnr", "recon/rfid", "recon/class_accuracy", "latent/kl_to_prior", "latent/interp_uniformity",
                   "latent/cycle_error", "latent/prior_fid", "gen/fid", "gen/kid", "gen/precision", "gen/recall",
                   "gen/coverage", "gen/classes_covered", "stage1/wall_s", "stage2/wall_s"]
HIGHER_IS_BETTER = ("psnr", "ssim", "precision", "recall", "coverage", "density", "classes_covered", "modes_covered",
                    "accuracy", "confidence", "evaluator_acc")
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


def job_overrides(job: Path) -> dict[str, str]:
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


def _digits(x: float) -> int:
    return 3 if abs(x) < 10 else (2 if abs(x) < 100 else 1)


def _fmt(values: list[float]) -> tuple[str, dict]:
    """(cell text, stats.mean_interval) of the numeric values: `mean [lo, hi] (n)`, `mean (1)` for one value."""
    s = stats.mean_interval(values)
    if s["mean"] is None:
        return "–", s
    d = _digits(s["mean"])
    if s["lo"] is None:
        return f"{s['mean']:.{d}f} (1)", s
    return f"{s['mean']:.{d}f} [{s['lo']:.{d}f}, {s['hi']:.{d}f}] ({s['n']})", s


def _fmt_diff(diff: Optional[dict]) -> str:
    if diff is None:
        return "–"
    d = _digits(max(abs(diff["diff"]), abs(diff["lo"]), abs(diff["hi"])))
    p = f"{diff['p']:.3f}" if diff["p"] >= 0.001 else "<0.001"
    return f"{diff['diff']:+.{d}f} [{diff['lo']:+.{d}f}, {diff['hi']:+.{d}f}] p={p}"


def _per_seed(runs: list[dict], column: str) -> dict:
    """{seed: value} of one row's runs (the job name stands in for a run without a seed: never paired)."""
    return {m["_seed"]: m.get(column) for m in runs if stats.numbers([m.get(column)])}


def find_reference(rows: list[dict], reference: Optional[str]) -> Optional[int]:
    """Index of the row `reference` names (`key=value[,key=value]`, matched against the row's swept values);
    None gives `autoencoder=vae` when such a row exists. A named reference that matches no row is an error."""
    wanted = reference or "autoencoder=vae"
    pairs = dict(p.split("=", 1) for p in wanted.split(",") if "=" in p)
    if not pairs:
        raise ConfigError(f"table.reference={reference!r} must look like key=value, e.g. autoencoder=vae")
    hits = [i for i, r in enumerate(rows) if all(dict(r["group"]).get(k) == v for k, v in pairs.items())]
    if reference and len(hits) != 1:
        labels = "; ".join(_label(r["group"]) for r in rows)
        raise ConfigError(f"table.reference={reference} matches {len(hits)} rows (rows: {labels}): name one row")
    return hits[0] if len(hits) == 1 else None


def mark_best(rows: list[dict], column: str) -> set[int]:
    """The row with the best mean, if it beats the runner-up: the difference's interval excludes 0 (p < 0.05).
    Rows that do not contend in the column (ldm.tables.contends) are left out; none is marked where the column
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
    diff = stats.difference(rows[i]["seeds"][column], rows[j]["seeds"][column])
    return {i} if diff is not None and diff["p"] < stats.ALPHA else set()


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
            cells[c], summaries[c] = _fmt([m.get(c) for m in runs])
        rows.append({"group": group, "n": len(runs), "cells": cells, "stats": summaries,
                     "means": {c: s["mean"] for c, s in summaries.items()},
                     "stds": {c: s["std"] for c, s in summaries.items()},
                     "seeds": {c: _per_seed(runs, c) for c in columns},
                     "contends": {c: contends(c, runs) for c in columns},
                     "floor_med": stats.numbers([m.get("eval/fid_floor") for m in runs]),
                     "floor_lo": min(stats.numbers([m.get("eval/fid_floor_lo") for m in runs]), default=None),
                     "floor_hi": max(stats.numbers([m.get("eval/fid_floor_hi") for m in runs]), default=None),
                     "floor_n": next((m["eval/fid_floor_n"] for m in runs if m.get("eval/fid_floor_n")), None)})
    best = {c: b for c in columns if (b := mark_best(rows, c))}
    ref = find_reference(rows, reference)
    for i, r in enumerate(rows):
        r["vs_ref"] = {c: (None if ref is None or i == ref else
                           stats.difference(r["seeds"][c], rows[ref]["seeds"][c])) for c in columns}
    bad = [r for r in records if r["status"] != "ok"]
    first_cfg_path = next((sweep_dir / r["job"] / ".hydra" / "config.yaml" for r in records
                           if (sweep_dir / r["job"] / ".hydra" / "config.yaml").is_file()), None)
    cfg = yaml.safe_load(first_cfg_path.read_text()) if first_cfg_path else {}
    budgets = [(label, _get(cfg, key)) for key, label in BUDGET_KEYS]
    constant = sorted({f"{k}={v}" for r in records for k, v in job_overrides(sweep_dir / r["job"]).items()
                       if k not in swept and k not in IGNORED_OVERRIDES})
    re_evaluated = [r for r in records if r["re_evaluated"]]
    samplers = sorted({r["metrics"]["eval/sampler"] for r in re_evaluated if r["metrics"].get("eval/sampler")})
    result = {"rows": rows, "columns": columns, "best": best, "bad": bad, "reference": ref, "swept": swept,
              "budgets": budgets, "constant": constant, "re_evaluated": len(re_evaluated), "jobs": len(records),
              "samplers": samplers,
              "eval_file": eval_file, "num_samples": sorted({r["metrics"].get("eval/num_samples") for r in re_evaluated
                                                             if r["metrics"].get("eval/num_samples")})}
    _write(sweep_dir, result, title or sweep_dir.name, name)
    result["figures"] = plot(result, sweep_dir, name)
    curves = budget_curves(result, converge_on, converge_margin) if converge_on else None
    if curves:  # a budget sweep: the curves, and each row's converged budget
        result["budget"] = curves
        result["figures"].append(plot_budget(curves, sweep_dir, name))
        atomic_write(sweep_dir / f"{name}_converged.md", lambda tmp: Path(tmp).write_text(converged_table(curves)))
    return result


def _floor_cell(row: dict) -> str:
    """The FID floor: median over held-out subsets with its 5-95 % range across the row's runs (runs written
    before floors were distributions have one value: shown as the mean over the row's runs)."""
    med = row["floor_med"]
    if med and row["floor_lo"] is not None and row["floor_hi"] is not None:
        mid = sum(med) / len(med)
        d = _digits(mid)
        return f"{mid:.{d}f} ({row['floor_lo']:.{d}f}–{row['floor_hi']:.{d}f})"
    return _fmt(med)[0]


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
          "Cells: mean [95 % Student-t interval over seeds] (number of seeds). **Bold** = best in its column, marked "
          "only where the difference to the runner-up excludes 0 at 95 % (p < 0.05; paired t by seed where both "
          "rows ran the same seeds, Welch t otherwise), among rows that measured it (not the wall time of a cached "
          "stage, not identity's exact reconstruction); no bold: the top rows cannot be told apart. FID floor: "
          "held-out real images vs train at the same feature extractor, median (5–95 % range over random "
          "held-out subsets of the generated set's size) where the run measured its spread.",
          (f"Re-evaluated from checkpoints ({t['eval_file']} over metrics.json): {t['re_evaluated']} of {t['jobs']} "
           "jobs" + (f", sampled with {', '.join(t['samplers'])}" if t["samplers"] else "")
           + (f", {'/'.join(map(str, t['num_samples']))} samples" if t["num_samples"] else "") + ".")
          if t["re_evaluated"] else "",
          "",
          "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for i, r in enumerate(rows):
        cells = [f"**{r['cells'][c]}**" if i in best.get(c, ()) else r["cells"][c] for c in cols]
        md.append("| " + " | ".join([_label(r["group"])] + cells + [_floor_cell(r)]) + " |")
    ref = t["reference"]
    if ref is not None and len(rows) > 1:
        ref_label = _label(rows[ref]["group"])
        md += ["", f"Difference from the reference row ({ref_label}): row mean − reference mean [95 % interval] "
               "and the two-sided p-value (paired t by seed where both rows ran the same seeds, Welch t otherwise; "
               "– where a row has fewer than 2 seeds).", "",
               "| config | " + " | ".join(cols) + " |", "|" + "|".join(["---"] * (len(cols) + 1)) + "|"]
        for i, r in enumerate(rows):
            if i != ref:
                md.append("| " + " | ".join([_label(r["group"])] + [_fmt_diff(r["vs_ref"][c]) for c in cols]) + " |")
    if t["bad"]:
        md += ["", "Jobs without results (failed, diverged, interrupted, corrupt or missing):"]
        md += [f"- job {b['job']} ({_label(b['group'])}, seed={b['seed']}): {b['status']}"
               + (f": {b['error']}" if b["error"] else "") for b in t["bad"]]
    atomic_write(sweep_dir / f"{name}.md", lambda tmp: Path(tmp).write_text("\n".join(md) + "\n"))
    # csv: machine-readable means, stds, intervals and the comparison with the reference row
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["config", "n"] + [h for c in cols for h in (c, f"{c}_std", f"{c}_lo", f"{c}_hi", f"{c}_vs_ref",
                                                                f"{c}_vs_ref_p")])
    blank = lambda v: "" if v is None else v  # noqa: E731
    for r in rows:
        cells = []
        for c in cols:
            s, d = r["stats"][c], r["vs_ref"][c] or {}
            cells += [blank(s["mean"]), blank(s["std"]), blank(s["lo"]), blank(s["hi"]), blank(d.get("diff")),
                      blank(d.get("p"))]
        w.writerow([_label(r["group"]), r["n"]] + cells)
    atomic_write(sweep_dir / f"{name}.csv", lambda tmp: Path(tmp).write_text(buf.getvalue()))
    # latex
    esc = lambda s: s.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")  # noqa: E731
    tex = [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
           " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        cells = [(r"\textbf{" + esc(r["cells"][c]) + "}") if i in best.get(c, ()) else esc(r["cells"][c])
                 for c in cols]
        tex.append(" & ".join([esc(_label(r["group"]))] + cells + [esc(_floor_cell(r))]) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}"]
    atomic_write(sweep_dir / f"{name}.tex", lambda tmp: Path(tmp).write_text("\n".join(tex) + "\n"))


# ---- figures next to the table ------------------------------------------------------------------------------
def _floor_band(runs_rows: list[dict]) -> Optional[tuple[float, float]]:
    lo = [r["floor_lo"] for r in runs_rows if r.get("floor_lo") is not None]
    hi = [r["floor_hi"] for r in runs_rows if r.get("floor_hi") is not None]
    return (min(lo), max(hi)) if lo and hi else None


def plot(t: dict, sweep_dir: Path, name: str = "table") -> list[Path]:
    """`<name>_bars.png`: one panel per column, each row's mean with its 95 % interval as an error bar (the
    FID floor's 5-95 % range as a band on gen/fid), best marks as in the table; `<name>_rate_distortion.png`
    where the sweep varies the KL weight and the table has latent/rate and a reconstruction column."""
    from ldm.metrics.figures import _pyplot, _save

    plt = _pyplot()
    rows, cols = t["rows"], [c for c in t["columns"] if any(r["means"][c] is not None for r in t["rows"])]
    written: list[Path] = []
    if not rows or not cols:
        return written
    labels = [", ".join(v for _, v in r["group"]) or "(all)" for r in rows]
    ncol = min(4, len(cols))
    nrow = -(-len(cols) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol, 0.35 * len(rows) * nrow + 1.6 * nrow), squeeze=False)
    for ax, c in zip(axes.flat, cols):
        y = list(range(len(rows)))
        means = [r["means"][c] if r["means"][c] is not None else float("nan") for r in rows]
        err = [[(m - r["stats"][c]["lo"]) if r["stats"][c]["lo"] is not None else 0 for m, r in zip(means, rows)],
               [(r["stats"][c]["hi"] - m) if r["stats"][c]["hi"] is not None else 0 for m, r in zip(means, rows)]]
        colours = ["tab:orange" if i in t["best"].get(c, ()) else "tab:blue" for i in range(len(rows))]
        ax.barh(y, means, xerr=err, color=colours, capsize=3)
        band = _floor_band(rows) if c == "gen/fid" else None
        if band:
            ax.axvspan(*band, color="grey", alpha=0.3, label="real-data floor (5-95 %)")
            ax.legend(fontsize=7, loc="lower right")
        ax.set_yticks(y)
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        d = direction(c)
        ax.set_title(c + (" (higher is better)" if d > 0 else " (lower is better)" if d < 0 else ""), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(cols):]:
        ax.axis("off")
    fig.suptitle(f"{sweep_dir.name}: mean and 95 % interval over seeds (orange: best, p < 0.05 vs runner-up)",
                 fontsize=9, y=1.0 + 0.12 / nrow)
    written.append(_save(fig, sweep_dir / f"{name}_bars.png"))
    kl_key = next((k for k in t["swept"] if k.endswith("kl_weight")), None)
    distortion = next((c for c in ("recon/mse", "recon/psnr") if c in t["columns"]), None)
    if kl_key and "latent/rate" in t["columns"] and distortion:
        pts = [(r["means"]["latent/rate"], r["means"][distortion], r["stats"][distortion], dict(r["group"])[kl_key])
               for r in rows if r["means"]["latent/rate"] is not None and r["means"][distortion] is not None]
        if pts:
            fig, ax = plt.subplots(figsize=(4.5, 3.5))
            pts.sort(key=lambda p: p[0])
            x = [p[0] for p in pts]
            yv = [p[1] for p in pts]
            yerr = [[p[1] - (p[2]["lo"] if p[2]["lo"] is not None else p[1]) for p in pts],
                    [(p[2]["hi"] if p[2]["hi"] is not None else p[1]) - p[1] for p in pts]]
            ax.errorbar(x, yv, yerr=yerr, marker="o", capsize=3)
            for xi, yi, p in zip(x, yv, pts):
                ax.annotate(f"β={p[3]}", (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
            ax.set_xlabel("rate: mean KL(q(z|x) || N(0, I)) per image (bits)")
            ax.set_ylabel(distortion)
            ax.set_title("rate-distortion across the KL weight (95 % intervals over seeds)", fontsize=9)
            written.append(_save(fig, sweep_dir / f"{name}_rate_distortion.png"))
    return written


# ---- budget curves (experiment=budget) ----------------------------------------------------------------------
BUDGET_SWEEP_KEYS = ("stage1.max_steps", "stage2.max_steps")


def budget_curves(t: dict, metric: str, margin: float = 0.1) -> Optional[dict]:
    """Where a sweep varies a step budget: per row (the group without the budget key), its budgets in order with
    the metric's mean and interval, and its converged budget: the smallest budget shown to be within `margin`
    (a share of the best budget's mean) of the row's best budget: the 95 % interval of its difference from the
    best (paired by seed where the seeds match) lies within that margin on the worse side. Without such a
    budget it is the best budget itself, which, at the top of the ladder, means no plateau was shown.

    An earlier rule took the smallest budget *not significantly worse* than the best (p >= 0.05); with 2 seeds
    that called the AE converged at 100 batches while its rFID fell 0.64 -> 0.22 -> 0.12 over 100, 300, 1000:
    no significant difference is not evidence of a plateau. None without a budget key."""
    key = next((k for k in BUDGET_SWEEP_KEYS if k in t["swept"]), None)
    if key is None or metric not in t["columns"]:
        return None
    d = direction(metric) or -1
    rows: dict[tuple, list] = {}
    for r in t["rows"]:
        group = dict(r["group"])
        budget = int(float(group.pop(key)))
        rows.setdefault(tuple(sorted(group.items())), []).append((budget, r))
    out = {}
    for group, pts in rows.items():
        pts.sort(key=lambda p: p[0])
        scored = [(b, r) for b, r in pts if r["means"][metric] is not None]
        converged = None
        if scored:
            best_b, best = max(scored, key=lambda p: d * p[1]["means"][metric])
            tol = margin * abs(best["means"][metric])
            for b, r in scored:
                diff = stats.difference(r["seeds"][metric], best["seeds"][metric])
                # worse side: above the best for a lower-is-better metric (d = -1), below it otherwise
                within = diff is not None and (diff["hi"] <= tol if d < 0 else diff["lo"] >= -tol)
                if b == best_b or within:
                    converged = b
                    break
        out[group] = {"budgets": [b for b, _ in pts], "stats": [r["stats"][metric] for _, r in pts],
                      "wall_s": [r["means"].get("stage1/wall_s") for _, r in pts], "converged": converged}
    return {"key": key, "metric": metric, "margin": margin, "rows": out}


def plot_budget(curves: dict, sweep_dir: Path, name: str = "table") -> Path:
    """`<name>_budget.png`: the metric against the step budget (left) and against stage-1 wall time (right), one
    line per row with 95 % intervals; a ring marks each row's converged budget."""
    from ldm.metrics.figures import _pyplot, _save

    from matplotlib.ticker import NullFormatter

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    # a positive metric spanning decades (rFID) reads on a log axis; its intervals are cut at a tenth of the mean
    positive = all(s["mean"] is None or s["mean"] > 0 for c in curves["rows"].values() for s in c["stats"])
    for group, c in curves["rows"].items():
        means = [s["mean"] if s["mean"] is not None else float("nan") for s in c["stats"]]
        lows = [max(s["lo"], 0.1 * m) if positive and s["lo"] is not None else s["lo"]
                for m, s in zip(means, c["stats"])]
        err = [[m - lo if lo is not None else 0 for m, lo in zip(means, lows)],
               [s["hi"] - m if s["hi"] is not None else 0 for m, s in zip(means, c["stats"])]]
        label = _label(group)
        for ax, x in ((axes[0], c["budgets"]), (axes[1], c["wall_s"])):
            if any(v is None for v in x):
                continue
            line = ax.errorbar(x, means, yerr=err, marker="o", capsize=3, label=label)
            if c["converged"] is not None:
                i = c["budgets"].index(c["converged"])
                ax.plot([x[i]], [means[i]], "o", ms=12, mfc="none", color=line[0].get_color())
    for ax, xlabel in ((axes[0], curves["key"]), (axes[1], "stage-1 wall time (s)")):
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(curves["metric"] + (" (log; bars cut at 0.1x the mean)" if positive else ""))
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{sweep_dir.name}: {curves['metric']} against budget (95 % intervals over seeds; ring = converged: "
                 f"the smallest budget shown within {100 * curves['margin']:.0f} % of the row's best)", fontsize=8)
    return _save(fig, sweep_dir / f"{name}_budget.png")


def converged_label(c: dict) -> str:
    """A row's converged budget as the table states it: `≥ B (no plateau shown)` when it is the largest budget
    of a ladder with several (no smaller budget was shown within the margin of it: still improving, or too few
    seeds to tell), `B (one seed: no test)` when the rung has one seed (the best budget stands in for the
    plateau), else the budget."""
    b = c["converged"]
    if b is None:
        return "–"
    stat = c["stats"][c["budgets"].index(b)]
    if stat.get("n", 2) < 2:
        return f"{b} (one seed: no test)"
    if b == c["budgets"][-1] and len(c["budgets"]) > 1:
        return f"≥ {b} (no plateau shown)"
    return str(b)


def converged_table(curves: dict) -> str:
    """Markdown: each row's converged budget and its metric there, next to the largest budget's."""
    lines = [f"Converged: the smallest budget whose difference from the row's best on {curves['metric']} has its 95 % "
             f"interval within {100 * curves['margin']:.0f} % of the best's mean (paired by seed).", "",
             f"| row | converged {curves['key']} | {curves['metric']} there | at the largest budget |",
             "|---|---|---|---|"]
    for group, c in curves["rows"].items():
        cell = lambda s: (f"{s['mean']:.3g} [{s['lo']:.3g}, {s['hi']:.3g}]" if s["lo"] is not None  # noqa: E731
                          else f"{s['mean']:.3g}" if s["mean"] is not None else "–")
        there = c["stats"][c["budgets"].index(c["converged"])] if c["converged"] is not None else None
        lines.append(f"| {_label(group)} | {converged_label(c)} | "
                     f"{cell(there) if there else '–'} | {cell(c['stats'][-1])} (at {c['budgets'][-1]}) |")
    return "\n".join(lines) + "\n"
