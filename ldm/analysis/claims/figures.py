"""A claims report's figures: C0's ranking, one labelled panel per metric a claim reads, and each claim's rows'
samples at one seed beside real data (REPORT.md, from ldm.analysis.claims.render, links them)."""

from __future__ import annotations

import json
from pathlib import Path

from ldm.analysis.claims.criteria import Finding, reads_of
from ldm.rundir import read_status


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
                    for m in [read_status(root / r["first_job"] / "metrics.json")]
                    if isinstance(m.get("eval/fid_floor"), (int, float)))
    if f.numbers["metric"] in ("gen/fid", "gen/fid_heldout") and floors:  # what real data scores against itself
        ax.axhline(floors[len(floors) // 2], color="tab:red", ls="--", lw=1,
                   label="real-data floor (held-out vs train, same count)")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_ylabel(f"{f.numbers['metric']} (95 % interval)")
    ax.set_title(f"{f.numbers['claim']} vs every row, same latent diffusion "
                 "(green: non-inferior to the best, Holm)", fontsize=9)
    for i, r in enumerate(rk):
        a = fig.add_subplot(grid[1, i])
        png = _grid(root / r["first_job"]) if r.get("first_job") else None
        if png is not None:
            a.imshow(mpimg.imread(png))
        else:
            a.text(0.5, 0.5, "no samples", ha="center", va="center", fontsize=8)
        a.set_title(r["label"], fontsize=8)
        a.axis("off")
    return save_figure(fig, path)


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
        key = (exp, tuple(sorted((k, str(v)) for k, v in row.items())))
        if key in seen:  # one row read under two labels (two sub-tests): one panel, the first label
            continue
        seen.add(key)
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
            what = str(data.get("_target_") or "").rsplit(".", 1)[-1].removesuffix("DataModule") or "data"
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
    fig.tight_layout(h_pad=2.5)  # room for the two-line panel titles between rows
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
