"""Budget curves (`experiment=budget`): per row, a metric against the step budget, and the converged budget: the
smallest budget shown to be within a margin of the row's best."""

from __future__ import annotations

from typing import Optional

from ldm.analysis import statistics
from ldm.analysis.columns import direction
from ldm.analysis.render import row_label

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
                diff = statistics.difference(r["seeds"][metric], best["seeds"][metric])
                # worse side: above the best for a lower-is-better metric (d = -1), below it otherwise
                within = diff is not None and (diff["hi"] <= tol if d < 0 else diff["lo"] >= -tol)
                if b == best_b or within:
                    converged = b
                    break
        out[group] = {"budgets": [b for b, _ in pts], "stats": [r["stats"][metric] for _, r in pts],
                      "wall_s": [r["means"].get("stage1/wall_s") for _, r in pts], "converged": converged}
    return {"key": key, "metric": metric, "margin": margin, "rows": out}



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
        lines.append(f"| {row_label(group)} | {converged_label(c)} | "
                     f"{cell(there) if there else '–'} | {cell(c['stats'][-1])} (at {c['budgets'][-1]}) |")
    return "\n".join(lines) + "\n"
