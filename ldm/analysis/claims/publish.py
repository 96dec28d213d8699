"""Publishing claims reports: copy a report into docs/claims/<profile>, splice the README's summary table, and log
the report to wandb.

    python -m ldm.analysis.claims.publish readme README.md <report dir> ... [--earlier <report dir> ...]
    python -m ldm.analysis.claims.publish publish logs/claims/<profile> docs/claims/<profile>

`readme`: per claim the verdict of the first report that decides it; `--earlier`: older reports, read by the same
rule, whose verdict goes beside each (e.g. the quick and hybrid profiles' beside the decisive one's), marked where
it changed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Optional

from ldm.analysis.claims.render import summary
from ldm.analysis.readme import splice
from ldm.errors import ConfigError

BLOCK = "claims-summary"  # the README's markers: <!-- claims-summary:begin ... --> ... <!-- claims-summary:end -->


def splice_readme(readme: Path, report_dirs: list[Path], command: str,
                  earlier: Optional[list[Path]] = None) -> None:
    """Replace the README's text between the claims-summary markers with `summary(report_dirs, earlier)` (atomic
    write)."""
    splice(readme, BLOCK, summary(report_dirs, earlier), command)


PUBLISHED = ("table.md", "table.csv", "table_converged.md")


def _check_report(d: Path) -> None:
    if not (Path(d) / "REPORT.md").is_file() or not (Path(d) / "verdicts.json").is_file():
        raise ConfigError(f"{d} holds no REPORT.md and verdicts.json: run evaluate.py claims=<profile> first")


def publish(src: Path, dst: Path) -> list[Path]:
    """Copy a report out of logs/ into the repository: REPORT.md, verdicts.json, controls.json, the ranking figure
    and each experiment's table and figures (not the job directories), keeping REPORT.md's relative links; files go
    to temp names, then rename."""
    _check_report(src)
    files = [src / "REPORT.md", src / "verdicts.json"]
    files += [src / "controls.json"] if (src / "controls.json").is_file() else []
    files += sorted(src.glob("*_ranking.png")) + sorted(src.glob("*_metrics.png"))  # C0's ranking, each claim's reads
    files += sorted(src.glob("*_samples.png"))  # each claim's rows' samples beside real data
    for exp in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("_")):  # not the job folders
        files += [exp / n for n in PUBLISHED if (exp / n).is_file()] + sorted(exp.glob("table_*.png"))
    out = []
    for f in files:
        target = dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(f, tmp)
        tmp.replace(target)
        out.append(target)
    return out


def log_to_wandb(profile: dict, root: Path, findings: dict) -> None:
    """The report as one wandb run (job_type claims-report, grouped with the sweeps it read): the verdicts and
    each experiment's table as wandb.Table, every figure as an image, REPORT.md as a text artifact."""
    import wandb

    from ldm.analysis.tables import wandb_table

    run = wandb.init(project=profile["wandb_project"], group=f"claims/{root.name}",
                     job_type="claims-report", name=f"claims-{profile['profile']}",
                     dir=str(root), config={"profile": profile.get("profile"), "dir": str(root)})
    verdicts = wandb.Table(columns=["claim", "statement", "verdict", "numbers"])
    for name, f in findings.items():
        verdicts.add_data(name, str(profile["claims"][name].get("statement", "")).strip(), f.verdict, f.text)
    payload = {"claims/verdicts": verdicts}
    for exp in (profile.get("experiments") or {}):
        table_csv = root / exp / "table.csv"
        if table_csv.is_file():
            payload[f"claims/{exp}/table"] = wandb_table(table_csv)
        for png in sorted((root / exp).glob("table_*.png")):
            payload[f"claims/{exp}/{png.stem}"] = wandb.Image(str(png))
    run.log(payload)
    art = wandb.Artifact(f"claims-report-{profile['profile']}", type="report")
    art.add_file(str(root / "REPORT.md"))
    run.log_artifact(art)
    run.summary.update({f"verdict/{k}": v.verdict for k, v in findings.items()})
    run.finish()


def main(argv: Optional[list[str]] = None) -> int:
    """The command line in the module docstring; bad input gives one `error:` line and exit 2."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    earlier: list[str] = []
    if "--earlier" in args:
        i = args.index("--earlier")
        earlier, args = args[i + 1:], args[:i]
        if not earlier:
            earlier = [""]
    usage = ("usage: python -m ldm.analysis.claims.publish readme README.md <report dir> ... "
             "[--earlier <report dir> ...]\n"
             "       python -m ldm.analysis.claims.publish publish logs/claims/<profile> docs/claims/<profile>")
    if not ((len(args) >= 3 and args[0] == "readme") or (len(args) == 3 and args[0] == "publish" and not earlier)) \
            or "" in earlier:
        print(usage, file=sys.stderr)
        return 2
    try:
        if args[0] == "publish":
            for f in publish(Path(args[1]), Path(args[2])):
                print(f)
            return 0
        for d in args[2:] + earlier:
            _check_report(Path(d))
        shown = args + (["--earlier", *earlier] if earlier else [])
        command = "python -m ldm.analysis.claims.publish " + " ".join(shown)
        splice_readme(Path(args[1]), [Path(d) for d in args[2:]], command, [Path(d) for d in earlier])
    except (ConfigError, OSError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
