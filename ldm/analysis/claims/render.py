"""A profile's findings as text: REPORT.md (deterministic bytes), verdicts.json, and the README's summary table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ldm.analysis.claims.criteria import Finding, experiments_of


def _details(f: Finding, depth: int = 0) -> list[str]:
    pad = "  " * depth
    lines = [f"{pad}- **{f.verdict}**: {f.text}"]
    for p in f.parts:
        lines += _details(p, depth + 1)
    return lines


def report(cfg: dict, root: Path, findings: dict[str, Finding], commands: list[str]) -> str:
    """REPORT.md: the verdict table, then per claim the pre-stated criterion, the numbers and the scope.
    Deterministic (no dates, fixed order), so the same sweeps give the same bytes."""
    lines = [f"# Claims report: {cfg['profile']} profile", "",
             cfg.get("label", "").strip(), "",
             "Each verdict follows from the criterion written in the profile's config before the runs "
             "(conf/claims/); `inconclusive` = the 95 % interval includes the decision threshold, `undecided` = "
             "runs are missing or failed (named below).", "",
             "| claim | statement | verdict |", "|---|---|---|"]
    for name, c in cfg["claims"].items():
        lines.append(f"| {name} | {c.get('statement', '').strip()} | **{findings[name].verdict}** |")
    for name, c in cfg["claims"].items():
        f = findings[name]
        lines += ["", f"## {name}: {c.get('statement', '').strip()}", "",
                  f"**Verdict: {f.verdict}.**", "",
                  f"Criterion (stated before the run): {c.get('criterion_text', '').strip() or '(see config)'}", ""]
        lines += _details(f)
        if c.get("scope"):
            lines += ["", f"Scope: {c['scope'].strip()}"]
        shown = [(e, root / e) for e in experiments_of(c["criterion"]) if (root / e / "table.md").is_file()]
        if shown:  # each experiment's full table (intervals, tests against the reference row) and its figures
            lines += ["", "Tables: " + ", ".join(f"[{e}]({e}/table.md)" for e, _ in shown)]
            figs = [f"![{e}: {png.stem}]({e}/{png.name})" for e, d in shown for png in sorted(d.glob("table_*.png"))]
            lines += (["", *figs] if figs else [])
    if commands:
        lines += ["", "## Reproduce", "", "```bash", *commands, "```"]
    return "\n".join(lines).rstrip() + "\n"


def json_ready(findings: dict[str, Finding]) -> dict[str, Any]:
    def one(f: Finding) -> dict:
        return {"verdict": f.verdict, "text": f.text, "numbers": f.numbers, "parts": [one(p) for p in f.parts]}
    return {k: one(v) for k, v in findings.items()}


def _flatten(f: dict) -> list[str]:
    return [f["text"]] if not f.get("parts") else [t for p in f["parts"] for t in _flatten(p)]


def summary(report_dirs: list[Path]) -> str:
    """One table over several reports (e.g. the quick profile and the hybrid one): per claim the verdict of the
    first report that decides it (not `undecided`), its profile, and the numbers behind it; a claim no report
    decides shows the first report's reason."""
    reports = []
    for d in report_dirs:
        d = Path(d)
        text = (d / "REPORT.md").read_text()
        profile = text.splitlines()[0].split(":", 1)[-1].strip().removesuffix(" profile")
        statements = {line.split("|")[1].strip(): line.split("|")[2].strip()
                      for line in text.splitlines() if line.startswith("| C")}
        reports.append((d, profile, statements, json.loads((d / "verdicts.json").read_text())))
    names = sorted({k for _, _, _, v in reports for k in v})
    lines = ["| claim | statement | verdict | profile | the numbers behind it (95 % intervals) |",
             "|---|---|---|---|---|"]
    for name in names:
        have = [(d, p, s, v) for d, p, s, v in reports if name in v]
        d, profile, statements, v = next(((d, p, s, v) for d, p, s, v in have if v[name]["verdict"] != "undecided"),
                                         have[0])
        numbers = "; ".join(t.replace("|", "/") for t in _flatten(v[name]))
        lines.append(f"| {name} | {statements.get(name, '')} | **{v[name]['verdict']}** | "
                     f"[{profile}]({d.as_posix()}/REPORT.md) | {numbers} |")
    return "\n".join(lines) + "\n"
