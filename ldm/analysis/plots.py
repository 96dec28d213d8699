"""Figures next to a sweep table: per-column bars with intervals, rate-distortion across the KL weight, and budget
curves (metric against step budget and wall time)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ldm.analysis.columns import direction
from ldm.analysis.render import row_label
from ldm.utils.plotting import pyplot, save_figure


# ---- figures next to the table ------------------------------------------------------------------------------
def _floor_band(runs_rows: list[dict]) -> Optional[tuple[float, float]]:
    lo = [r["floor_lo"] for r in runs_rows if r.get("floor_lo") is not None]
    hi = [r["floor_hi"] for r in runs_rows if r.get("floor_hi") is not None]
    return (min(lo), max(hi)) if lo and hi else None



def plot(t: dict, sweep_dir: Path, name: str = "table") -> list[Path]:
    """`<name>_bars.png`: one panel per column, each row's mean with its 95 % interval as an error bar (the
    FID floor's 5-95 % range as a band on gen/fid), best marks as in the table; `<name>_rate_distortion.png`
    where the sweep varies the KL weight and the table has latent/rate and a reconstruction column."""
    plt = pyplot()
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
    written.append(save_figure(fig, sweep_dir / f"{name}_bars.png"))
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
            written.append(save_figure(fig, sweep_dir / f"{name}_rate_distortion.png"))
    return written



def plot_budget(curves: dict, sweep_dir: Path, name: str = "table") -> Path:
    """`<name>_budget.png`: the metric against the step budget (left) and against stage-1 wall time (right), one
    line per row with 95 % intervals; a ring marks each row's converged budget."""
    from matplotlib.ticker import NullFormatter

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    # a positive metric spanning decades (rFID) reads on a log axis; its intervals are cut at a tenth of the mean
    positive = all(s["mean"] is None or s["mean"] > 0 for c in curves["rows"].values() for s in c["stats"])
    for group, c in curves["rows"].items():
        means = [s["mean"] if s["mean"] is not None else float("nan") for s in c["stats"]]
        lows = [max(s["lo"], 0.1 * m) if positive and s["lo"] is not None else s["lo"]
                for m, s in zip(means, c["stats"])]
        err = [[m - lo if lo is not None else 0 for m, lo in zip(means, lows)],
               [s["hi"] - m if s["hi"] is not None else 0 for m, s in zip(means, c["stats"])]]
        row_name = row_label(group)
        for ax, x in ((axes[0], c["budgets"]), (axes[1], c["wall_s"])):
            if any(v is None for v in x):
                continue
            line = ax.errorbar(x, means, yerr=err, marker="o", capsize=3, label=row_name)
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
    return save_figure(fig, sweep_dir / f"{name}_budget.png")
