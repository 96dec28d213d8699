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
        d = r.get("vs_best") or {}
        gap = f" (vs the best: {d['diff']:+.3g} [{d['lo']:+.3g}, {d['hi']:+.3g}])" if "lo" in d else ""
        cell = "(best)" if i == 1 else ("yes" if r["non_inferior_to_best"] else "not shown") + gap
        lo = "–" if r.get("lo") is None else f"{r['lo']:.3g}"
        hi = "–" if r.get("hi") is None else f"{r['hi']:.3g}"
        lines.append(f"| {i} | {r['label']} | {r['mean']:.3g} [{lo}, {hi}] | {r['n']} | {cell} |")
    return lines


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


# ---- what each claim reads: a small table (its figure: ldm.analysis.claims.figures) ------------------------------
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


