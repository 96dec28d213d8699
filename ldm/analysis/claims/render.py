"""A profile's findings as text: REPORT.md (deterministic bytes), verdicts.json, and the README's summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ldm.analysis.claims.criteria import Finding, control_outcome, experiments_of, reads_of


def _details(f: Finding, depth: int = 0) -> list[str]:
    pad = "  " * depth
    lines = [f"{pad}- **{f.verdict}**: {f.text}"]
    for p in f.parts:
        lines += _details(p, depth + 1)
    return lines


RULES = ("Each verdict follows from the criterion written in the profile's config before the runs (conf/claims/). "
         "Multiplicity: a claim's sub-tests form one family, and Holm's step-down rule at one-sided level 0.025 "
         "decides each sub-test's support and its contradiction; `supported` needs every sub-test, `contradicted` "
         "any one. `inconclusive` = no sub-test rejects either way; `underpowered` = inconclusive where the "
         "minimum detectable effect (MDE: 80 % power at Holm's strictest level, from the seeds' spread) exceeds "
         "the effect the criterion declared, so the run could not have told; `undecided` = runs are missing or "
         "failed (named below). Intervals are 95 % and p-values two-sided, both unadjusted; the verdicts are Holm's.")


def ranking_table(f: Finding) -> list[str]:
    """C0's ranking: every row by mean (best first), its interval, and whether it is non-inferior to the best."""
    rk = f.numbers["ranking"]
    lines = [f"| rank | row | {f.numbers['metric']} mean [95 % interval] | n | non-inferior to the best (Holm) |",
             "|---|---|---|---|---|"]
    for i, r in enumerate(rk, 1):
        cell = "(best)" if i == 1 else ("yes" if r["non_inferior_to_best"] else "no")
        lo = "–" if r.get("lo") is None else f"{r['lo']:.3g}"
        hi = "–" if r.get("hi") is None else f"{r['hi']:.3g}"
        lines.append(f"| {i} | {r['label']} | {r['mean']:.3g} [{lo}, {hi}] | {r['n']} | {cell} |")
    return lines


def _metrics(job: Path) -> dict:
    try:
        return json.loads((job / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}


def ranking_figure(f: Finding, root: Path, path: Path) -> Path:
    """C0's figure: each row's mean with its 95 % interval (best first), above each row's samples (lowest seed)."""
    from matplotlib import image as mpimg

    from ldm.utils.plotting import pyplot, save_figure

    plt = pyplot()
    rk = f.numbers["ranking"]
    fig = plt.figure(figsize=(max(6.0, 1.6 * len(rk)), 5.2))
    grid = fig.add_gridspec(2, len(rk), height_ratios=[1.3, 1.0])
    ax = fig.add_subplot(grid[0, :])
    xs = list(range(len(rk)))
    means = [r["mean"] for r in rk]
    err = [[r["mean"] - (r["lo"] if r.get("lo") is not None else r["mean"]) for r in rk],
           [(r["hi"] if r.get("hi") is not None else r["mean"]) - r["mean"] for r in rk]]
    colors = ["tab:green" if r["non_inferior_to_best"] else "tab:gray" for r in rk]
    ax.bar(xs, means, yerr=err, color=colors, capsize=4)
    if min(means) > 0 and max(means) / min(means) > 20:  # rows orders of magnitude apart: a log axis
        ax.set_yscale("log")
        ax.set_ylim(bottom=min(r["lo"] if r.get("lo") and r["lo"] > 0 else r["mean"] for r in rk) / 2)
    ax.set_xticks(xs, [r["label"] for r in rk], fontsize=8)
    floors = sorted(m["eval/fid_floor"] for r in rk if r.get("first_job")
                    for m in [_metrics(root / r["first_job"])] if isinstance(m.get("eval/fid_floor"), (int, float)))
    if f.numbers["metric"] in ("gen/fid", "gen/fid_heldout") and floors:  # what real data scores against itself
        ax.axhline(floors[len(floors) // 2], color="tab:red", ls="--", lw=1,
                   label="real-data floor (held-out vs train, same count)")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_ylabel(f"{f.numbers['metric']} (95 % interval)")
    ax.set_title(f"{f.numbers['claim']} vs every row, same latent diffusion "
                 "(green: non-inferior to the best, Holm)", fontsize=9)
    for i, r in enumerate(rk):
        a = fig.add_subplot(grid[1, i])
        png = root / r["first_job"] / "samples.png" if r.get("first_job") else None
        if png is not None and png.is_file():
            a.imshow(mpimg.imread(png))
        else:
            a.text(0.5, 0.5, "no samples", ha="center", va="center", fontsize=8)
        a.set_title(r["label"], fontsize=8)
        a.axis("off")
    return save_figure(fig, path)


def report(cfg: dict, root: Path, findings: dict[str, Finding], commands: list[str],
           controls: dict[str, Finding] | None = None, campaign: list[str] | None = None,
           reads: dict[str, list[dict]] | None = None) -> str:
    """REPORT.md: the verdict table, the negative controls, then per claim the pre-stated criterion, the numbers
    and the scope. Deterministic (no dates, fixed order), so the same sweeps give the same bytes."""
    lines = [f"# Claims report: {cfg['profile']} profile", "",
             cfg.get("label", "").strip(), "", RULES, "",
             "| claim | statement | verdict |", "|---|---|---|"]
    for name, c in cfg["claims"].items():
        lines.append(f"| {name} | {c.get('statement', '').strip()} | **{findings[name].verdict}** |")
    if campaign:  # where the numbers come from: the records, their code, and where each row stopped training
        lines += ["", "## Records and stopping steps", "", *campaign]
    if controls:
        lines += ["", "## Negative controls", "",
                  "Each applies one claim's criterion where the claim is false by construction; a criterion that "
                  "such a control passes decides nothing.", "",
                  "| control | claim | what it applies | verdict | the criterion |", "|---|---|---|---|---|"]
        for name, f in controls.items():
            c = cfg["controls"][name]
            lines.append(f"| {name} | {c['claim']} | {c.get('text', '').strip()} | {f.verdict} | "
                         f"{control_outcome(f)} |")
        lines.append("")
        for name, f in controls.items():
            lines += [f"- {name}:", *["  " + x for x in _details(f)]]
    for name, c in cfg["claims"].items():
        f = findings[name]
        lines += ["", f"## {name}: {c.get('statement', '').strip()}", "",
                  f"**Verdict: {f.verdict}.**", "",
                  f"Criterion (stated before the run): {c.get('criterion_text', '').strip() or '(see config)'}", ""]
        lines += _details(f)
        if "ranking" in f.numbers:
            lines += ["", *ranking_table(f)]
            if (root / f"{name}_ranking.png").is_file():
                lines += ["", f"![{name}: ranking]({name}_ranking.png)"]
        if reads and any(r["n"] for r in reads.get(name, [])):  # the numbers the criterion read, row by row
            lines += ["", "What it reads:", "", *claim_table(reads[name])]
            if (root / f"{name}_metrics.png").is_file():
                lines += ["", f"![{name}: the metrics it reads]({name}_metrics.png)"]
        if (root / f"{name}_samples.png").is_file():
            lines += ["", f"![{name}: samples of the rows it reads, beside real data]({name}_samples.png)"]
        if c.get("scope"):
            lines += ["", f"Scope: {c['scope'].strip()}"]
        shown = [(e, root / e) for e in experiments_of(c["criterion"]) if (root / e / "table.md").is_file()]
        if shown:  # each experiment's full table (intervals, tests against the reference row) and its figures
            lines += ["", "Tables: " + ", ".join(f"[{e}]({e}/table.md)" for e, _ in shown)]
            figs = [f"[{e}: {png.stem}]({e}/{png.name})" for e, d in shown for png in sorted(d.glob("table_*.png"))]
            lines += ["", "Every column of those tables as figures: " + ", ".join(figs)] if figs else []
    if commands:
        lines += ["", "## Reproduce", "", "```bash", *commands, "```"]
    return "\n".join(lines).rstrip() + "\n"


def json_ready(findings: dict[str, Finding]) -> dict[str, Any]:
    def one(f: Finding) -> dict:
        return {"verdict": f.verdict, "text": f.text, "numbers": f.numbers, "parts": [one(p) for p in f.parts]}
    return {k: one(v) for k, v in findings.items()}


def _flatten(f: dict) -> list[str]:
    return [f["text"]] if not f.get("parts") else [t for p in f["parts"] for t in _flatten(p)]


def _read_report(d: Path) -> tuple[Path, str, dict, dict]:
    """(dir, profile name, {claim: statement}, verdicts.json) of a published report."""
    d = Path(d)
    text = (d / "REPORT.md").read_text()
    profile = text.splitlines()[0].split(":", 1)[-1].strip().removesuffix(" profile")
    statements = {line.split("|")[1].strip(): line.split("|")[2].strip()
                  for line in text.splitlines() if line.startswith("| C")}
    return d, profile, statements, json.loads((d / "verdicts.json").read_text())


def _deciding(reports: list[tuple], name: str) -> tuple | None:
    """The first report that decides claim `name` (not `undecided`), else the first that has it."""
    have = [r for r in reports if name in r[3]]
    return next((r for r in have if r[3][name]["verdict"] != "undecided"), have[0] if have else None)


def summary(report_dirs: list[Path], earlier: list[Path] | None = None) -> str:
    """One table over several reports (e.g. the decisive profile and the hybrid one): per claim the verdict of the
    first report that decides it (not `undecided`), its profile, and the numbers behind it; a claim no report
    decides shows the first report's reason. With `earlier` (reports made before, e.g. the quick and hybrid
    profiles, read by the same rule): the verdict they gave beside each, marked where it changed. Above the
    table, C0's ranking where a report ranks rows."""
    reports = [_read_report(d) for d in report_dirs]
    before = [_read_report(d) for d in earlier or []]
    names = sorted({k for _, _, _, v in reports for k in v})
    lines = []
    ranked = next(((d, p, v[n]) for d, p, _, v in reports for n in names
                   if v.get(n, {}).get("verdict") != "undecided" and "ranking" in v.get(n, {}).get("numbers", {})),
                  None)
    if ranked is not None:
        d, profile, f = ranked
        numbers = f["numbers"]
        lines += [f"**The question first: {numbers['metric']} of the same latent diffusion on every row's latent** "
                  f"([{profile} profile]({d.as_posix()}/REPORT.md); lower is better; non-inferior: within the "
                  "criterion's margin of the best, Holm):", "",
                  *ranking_table(Finding(f["verdict"], f["text"], numbers)), ""]
    head = "| claim | statement | verdict | profile |" + (
        f" before ({', '.join(p for _, p, _, _ in before)}) |" if before else "")
    lines += [head + " the numbers behind it (95 % intervals) |",
              "|---|---|---|---|" + ("---|" if before else "") + "---|"]
    for name in names:
        d, profile, statements, v = _deciding(reports, name)
        numbers = "; ".join(t.replace("|", "/") for t in _flatten(v[name]))
        was = ""
        if before:
            old_report = _deciding(before, name)
            old = old_report[3][name]["verdict"] if old_report else None
            was = (" – |" if old is None else f" {old} ({old_report[1]}) |" if old == v[name]["verdict"]
                   else f" {old} ({old_report[1]}; **changed**) |")
        lines.append(f"| {name} | {statements.get(name, '')} | **{v[name]['verdict']}** | "
                     f"[{profile}]({d.as_posix()}/REPORT.md) |{was} {numbers} |")
    return "\n".join(lines) + "\n"


# ---- what each claim reads: a small table and one labelled panel per metric ------------------------------------
def claim_numbers(criterion: dict, sweeps) -> list[dict]:
    """Per row a claim reads: its metric's mean, 95 % interval and seed count (None where no job reported it)."""
    from ldm.analysis import statistics
    from ldm.analysis.claims.criteria import _select

    rows = []
    for exp, row, metric, label in reads_of(criterion):
        values, _ = _select(sweeps.jobs(exp), row, exp, metric)
        stats = statistics.mean_interval(list(values.values()))  # n 0, mean None where no job reported it
        rows.append({"experiment": exp, "row": label, "metric": metric, "n": stats["n"], "mean": stats["mean"],
                     "lo": stats["lo"], "hi": stats["hi"]})
    return rows


def claim_table(numbers: list[dict]) -> list[str]:
    def f(x) -> str:
        return "–" if x is None else f"{x:.4g}"

    lines = ["| metric | experiment | row | mean [95 % interval] | seeds |", "|---|---|---|---|---|"]
    for r in numbers:
        lines.append(f"| {r['metric']} | {r['experiment']} | {r['row']} | {f(r['mean'])} [{f(r['lo'])}, "
                     f"{f(r['hi'])}] | {r['n']} |")
    return lines


def _grid(job: Path) -> Path | None:
    """A job's sample grid: stage 2's samples.png, or for a row without stage 2 (the GAN) its prior samples G(z)
    from the last validation (stage1_prior.png)."""
    return next((job / n for n in ("samples.png", "stage1_prior.png") if (job / n).is_file()), None)


def _seed_order(seed) -> tuple:
    """Seeds by number where they are numbers (as a sweep writes them: text), then the rest by text."""
    try:
        return (0, float(seed), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(seed))


def sample_panels(criterion: dict, sweeps) -> tuple[list[dict], object]:
    """The rows a claim reads, once each, with the job whose sample grid a figure shows: every row at the lowest
    seed that all rows with a grid ran (the same seed side by side), else each at its own lowest; (panels, seed)."""
    from ldm.analysis.claims.criteria import _match

    panels, seen = [], set()
    for exp, row, _, label in reads_of(criterion):
        if (exp, label) in seen:
            continue
        seen.add((exp, label))
        ok = [r for r in sweeps.jobs(exp) or [] if _match(r, row) and r["status"] == "ok"]
        jobs = {r["seed"]: sweeps.root / exp / r["job"] for r in ok}
        grid = {s: _grid(d) for s, d in jobs.items()}
        panels.append({"experiment": exp, "label": label, "jobs": jobs, "grid": grid,
                       "grids": {s for s, g in grid.items() if g is not None}})
    with_grids = [p["grids"] for p in panels if p["grids"]]
    common = set.intersection(*with_grids) if with_grids else set()
    seed = min(common, key=_seed_order) if common else None
    for p in panels:
        own = sorted(p["grids"], key=_seed_order)
        p["seed"] = seed if seed in p["grids"] else (own[0] if own else None)
        p["job"] = p["jobs"].get(p["seed"]) if p["seed"] is not None else next(iter(p["jobs"].values()), None)
    return panels, seed


def samples_figure(name: str, criterion: dict, sweeps, real, path: Path,
                   drawn: dict | None = None) -> Path | None:
    """Each row the claim reads: its samples (samples.png, the first 64) at the same seed, beside the first 64 real
    test images of each dataset those rows use (`real(config.yaml, png) -> png or None`, given by the entry:
    analysis builds no data; `drawn` keeps the grids drawn for earlier claims). None where no row has a grid."""
    import yaml
    from matplotlib import image as mpimg

    from ldm.utils.plotting import pyplot, save_figure

    panels, seed = sample_panels(criterion, sweeps)
    if not any(p["grids"] for p in panels):
        return None
    drawn = {} if drawn is None else drawn  # every distinct dataset config drawn once: (its class, the grid)
    reals: dict[str, tuple[str, Path]] = {}
    for p in panels:
        cfg = p["job"] / ".hydra" / "config.yaml" if p["job"] is not None else None
        if real is None or cfg is None or not cfg.is_file():
            continue
        data = (yaml.safe_load(cfg.read_text()) or {}).get("data") or {}
        key = json.dumps({k: v for k, v in data.items() if k not in ("shuffle_seed", "batch_size", "num_workers")},
                         sort_keys=True, default=str)
        if key not in drawn:
            out = real(cfg, sweeps.root / "_real" / f"{len(drawn)}.png")
            what = str(data.get("_target_", "")).rsplit(".", 1)[-1].removesuffix("DataModule") or "data"
            drawn[key] = (what, Path(out)) if out is not None else None
        if drawn[key] is not None:
            reals[key] = drawn[key]
    tiles = [(f"real test images\n({what})", png) for what, png in reals.values()]
    for p in panels:
        png = p["grid"].get(p["seed"]) if p["seed"] in p["grids"] else None
        where = f"seed {p['seed']}" if png is not None else "no sample grid recorded"
        tiles.append((f"{p['label']}\n({p['experiment']}, {where})", png))
    plt = pyplot()
    cols = min(4, len(tiles))
    rows = -(-len(tiles) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, png) in zip(axes.flat, tiles):
        if png is not None and Path(png).is_file():
            ax.imshow(mpimg.imread(png))
        else:
            ax.text(0.5, 0.5, "no sample grid\nin its record", ha="center", va="center", fontsize=8)
        ax.set_title(title, fontsize=8)
    same = f"every row at seed {seed}" if seed is not None else "each row at its lowest seed"
    fig.suptitle(f"{name}: samples of the rows it reads ({same}), beside real data", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def claim_figure(name: str, numbers: list[dict], path: Path) -> Path | None:
    """One panel per metric the claim reads (not the sweep's 30-panel grid): each row's mean and 95 % interval."""
    from ldm.utils.plotting import pyplot, save_figure

    metrics = list(dict.fromkeys(r["metric"] for r in numbers if r["mean"] is not None))
    if not metrics:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 3.4 * len(metrics)), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        rows = [r for r in numbers if r["metric"] == metric and r["mean"] is not None]
        xs = list(range(len(rows)))
        err = [[r["mean"] - (r["lo"] if r["lo"] is not None else r["mean"]) for r in rows],
               [(r["hi"] if r["hi"] is not None else r["mean"]) - r["mean"] for r in rows]]
        means = [r["mean"] for r in rows]
        ax.bar(xs, means, yerr=err, capsize=4, color="tab:blue")
        if min(means) > 0 and max(means) / min(means) > 20:  # rows orders of magnitude apart: a log axis
            ax.set_yscale("log")
        many = len(rows) > 3  # long labels side by side overlap: slant them
        ax.set_xticks(xs, [f"{r['row']}\n({r['experiment']})" for r in rows], fontsize=7,
                      rotation=30 if many else 0, ha="right" if many else "center")
        ax.set_title(metric, fontsize=9)
        ax.set_ylabel("mean, 95 % interval over seeds", fontsize=7)
    fig.suptitle(f"{name}: the metrics its criterion reads", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
