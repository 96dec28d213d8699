"""The README's `make train` output block, generated from a real run directory (never typed by hand):

    python -m ldm.analysis.publish_run README.md logs/train/runs/<date>_<time>

It writes what train.py printed at the end of that run (`ldm.rundir.summary`, from the run's metrics.json and the
files it left), with the date, the commit and the CPU it ran on, between the README's train-output markers.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from ldm.analysis.readme import splice
from ldm.errors import ConfigError
from ldm.rundir import read_status, summary
from ldm.utils.machine import cpu_model

BLOCK = "train-output"


def commit(where: Path) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def block(run_dir: Path, shown_as: Optional[str] = None) -> str:
    """The fenced output of a finished run; `shown_as` replaces the run directory's path (e.g. a generic name)."""
    record = read_status(run_dir / "metrics.json")
    if record["status"] != "ok":
        raise ConfigError(
            f"{run_dir} is {record['status']}, not a finished run: run `make train` and pass its directory"
        )
    text = summary(run_dir, record)
    if shown_as:
        text = text.replace(str(run_dir), shown_as)
    walls = [record.get(k) for k in ("stage1/wall_s", "stage2/wall_s", "eval/wall_s")]
    total = sum(w for w in walls if isinstance(w, (int, float)))
    when = time.strftime("%Y-%m-%d", time.localtime((run_dir / "metrics.json").stat().st_mtime))
    head = (
        f"From a real `make train` run on {when}, published at commit {commit(Path.cwd())}, {cpu_model()} "
        f"(stages and evaluation {total / 60:.1f} min):\n\n"
    )
    return head + "```text\n" + text + "\n```\n"


def main(argv: Optional[list[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("error: usage: python -m ldm.analysis.publish_run README.md <train.py run directory>", file=sys.stderr)
        return 2
    readme, run_dir = Path(args[0]), Path(args[1])
    try:
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir} is not a directory: pass the run directory `make train` printed")
        shown = "logs/train/runs/<date>_<time>"
        splice(readme, BLOCK, block(run_dir, shown), "python -m ldm.analysis.publish_run " + " ".join(args))
    except (ConfigError, OSError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
