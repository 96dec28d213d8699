"""A sweep table (`ldm.analysis.tables.build`'s dict) as text: one renderer per format (Markdown, CSV, LaTeX),
and the cell formats they share."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Optional

from ldm.analysis import statistics
from ldm.utils.io import atomic_write


def digits(x: float) -> int:
    return 3 if abs(x) < 10 else (2 if abs(x) < 100 else 1)


def cell(values: list[float]) -> tuple[str, dict]:
    """(cell text, statistics.mean_interval) of the numeric values: `mean [lo, hi] (n)`, `mean (1)` for one value."""
    s = statistics.mean_interval(values)
    if s["mean"] is None:
        return "–", s
    d = digits(s["mean"])
    if s["lo"] is None:
        return f"{s['mean']:.{d}f} (1)", s
    return f"{s['mean']:.{d}f} [{s['lo']:.{d}f}, {s['hi']:.{d}f}] ({s['n']})", s


def diff_cell(diff: Optional[dict]) -> str:
    if diff is None:
        return "–"
    d = digits(max(abs(diff["diff"]), abs(diff["lo"]), abs(diff["hi"])))
    if diff["p"] is None:  # every seed gave the same difference: no interval, no test
        return f"{diff['diff']:+.{d}f} (zero spread: no test)"
    p = f"{diff['p']:.3f}" if diff["p"] >= 0.001 else "<0.001"
    return f"{diff['diff']:+.{d}f} [{diff['lo']:+.{d}f}, {diff['hi']:+.{d}f}] p={p}"


def floor_cell(row: dict) -> str:
    """The FID floor: median over held-out subsets with its 5-95 % range across the row's runs (runs written
    before floors were distributions have one value: shown as the mean over the row's runs)."""
    med = row["floor_med"]
    if med and row["floor_lo"] is not None and row["floor_hi"] is not None:
        mid = sum(med) / len(med)
        d = digits(mid)
        return f"{mid:.{d}f} ({row['floor_lo']:.{d}f}–{row['floor_hi']:.{d}f})"
    return cell(med)[0]


def row_label(group: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in group) or "(all)"


def _head(t: dict) -> list[str]:
    floor_n = sorted({r["floor_n"] for r in t["rows"] if r["floor_n"]})
    return ["config"] + t["columns"] + ["FID floor" + (f" (n={'/'.join(map(str, floor_n))})" if floor_n else "")]


WIDE = 8  # a table with more columns than this is written one line per metric (rows of the sweep as columns)
GROUPS = ("recon/", "latent/", "gen/", "mem/", "eval/", "stage1/", "stage2/")


def _grouped(columns: list[str]) -> list[str]:
    """Columns in reading order: reconstruction, latent, generation, memorisation, evaluation, then the stages'
    budgets and times; the given order within each group."""
    rank = lambda c: next((i for i, g in enumerate(GROUPS) if c.startswith(g)), len(GROUPS))  # noqa: E731
    return sorted(columns, key=rank)


def _transposed(t: dict) -> list[str]:
    """A wide table one line per metric, the sweep's rows as columns (a table of 30 metrics x 6 rows reads down)."""
    rows, best = t["rows"], t["best"]
    head = ["metric"] + [row_label(r["group"]) for r in rows]
    md = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for c in _measured(t):
        cells = [f"**{r['cells'][c]}**" if i in best.get(c, ()) else r["cells"][c] for i, r in enumerate(rows)]
        md.append("| " + " | ".join([c] + cells) + " |")
    md.append("| " + " | ".join([_head(t)[-1]] + [floor_cell(r) for r in rows]) + " |")
    unmeasured = [c for c in t["columns"] if c not in _measured(t)]
    return md + (["", "Not measured by any row here: " + ", ".join(unmeasured) + "."] if unmeasured else [])


def _measured(t: dict) -> list[str]:
    """The columns some row has a value in, in reading order."""
    return [c for c in _grouped(t["columns"]) if any(r["means"][c] is not None for r in t["rows"])]


def _transposed_diff(t: dict) -> list[str]:
    rows, ref = t["rows"], t["reference"]
    others = [r for i, r in enumerate(rows) if i != ref]
    head = ["metric"] + [f"{row_label(r['group'])} − reference" for r in others]
    md = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for c in _measured(t):
        md.append("| " + " | ".join([c] + [diff_cell(r["vs_ref"][c]) for r in others]) + " |")
    return md


def markdown(t: dict, title: str) -> str:
    """The table with its budgets, shared overrides, the comparison with the reference row and the bad jobs; a
    table wider than WIDE columns is written one line per metric."""
    cols, rows, best = t["columns"], t["rows"], t["best"]
    head = _head(t)
    wide = len(cols) > WIDE
    md = [f"### {title}", "",
          "Budgets: " + ", ".join(f"{what} {v}" for what, v in t["budgets"] if v is not None or "samples" in what),
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
          (f"Ignored as another training's ({t['eval_file']} whose stage keys are not the job's): jobs "
           + ", ".join(t["stale"]) + ".") if t.get("stale") else "",
          ""]
    if wide:
        md += _transposed(t)
    else:
        md += ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        for i, r in enumerate(rows):
            cells = [f"**{r['cells'][c]}**" if i in best.get(c, ()) else r["cells"][c] for c in cols]
            md.append("| " + " | ".join([row_label(r["group"])] + cells + [floor_cell(r)]) + " |")
    ref = t["reference"]
    if ref is not None and len(rows) > 1:
        ref_label = row_label(rows[ref]["group"])
        md += ["", f"Difference from the reference row ({ref_label}): row mean − reference mean [95 % interval] "
               "and the two-sided p-value (paired t by seed where both rows ran the same seeds, Welch t otherwise; "
               "– where a row has fewer than 2 seeds).", ""]
        if wide:
            md += _transposed_diff(t)
        else:
            md += ["| config | " + " | ".join(cols) + " |", "|" + "|".join(["---"] * (len(cols) + 1)) + "|"]
            for i, r in enumerate(rows):
                if i != ref:
                    md.append("| " + " | ".join([row_label(r["group"])] + [diff_cell(r["vs_ref"][c]) for c in cols])
                              + " |")
    if t["bad"]:
        md += ["", "Jobs without results (failed, diverged, interrupted, corrupt or missing):"]
        md += [f"- job {b['job']} ({row_label(b['group'])}, seed={b['seed']}): {b['status']}"
               + (f": {b['error']}" if b["error"] else "") for b in t["bad"]]
    return "\n".join(md) + "\n"


def csv_text(t: dict) -> str:
    """Machine-readable means, stds, intervals and the comparison with the reference row."""
    cols, rows = t["columns"], t["rows"]
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
        w.writerow([row_label(r["group"]), r["n"]] + cells)
    return buf.getvalue()


def latex(t: dict) -> str:
    """A booktabs tabular of the cells (best marked bold)."""
    rows, best = t["rows"], t["best"]
    cols, head = t["columns"], _head(t)
    esc = lambda s: s.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$")  # noqa: E731
    tex = [r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule",
           " & ".join(esc(h) for h in head) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        cells = [(r"\textbf{" + esc(r["cells"][c]) + "}") if i in best.get(c, ()) else esc(r["cells"][c])
                 for c in cols]
        tex.append(" & ".join([esc(row_label(r["group"]))] + cells + [esc(floor_cell(r))]) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(tex) + "\n"


RENDERERS = {"md": markdown, "csv": lambda t, title: csv_text(t), "tex": lambda t, title: latex(t)}


def write(sweep_dir: Path, t: dict, title: str, name: str = "table") -> list[Path]:
    """<name>.md, <name>.csv and <name>.tex in `sweep_dir` (each written to a temporary name, then renamed)."""
    out = []
    for ext, render in RENDERERS.items():
        text = render(t, title)
        out.append(atomic_write(sweep_dir / f"{name}.{ext}", lambda tmp, text=text: Path(tmp).write_text(text)))
    return out
