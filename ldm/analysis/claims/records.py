"""Campaign records: one small, self-describing, committable directory per finished job of a claims profile.

    results/<profile>/<experiment>/<job key>/
        record.json     overrides, status, metrics, commit, code hash, machine, wall per stage, stopping steps
        config.yaml     the job's resolved config (what Hydra composed)
        samples.png     the job's sample grid (when it wrote one); stage1_prior.png: a GAN's G(z)
        plateau_*.json  each plateau-stopped stage's validation curve

A profile with `results:` is run as a campaign: its report reads records, not sweep directories, so records
made on several machines (several clones committing into one `results/`, or extra roots under `merge:`) give
one report, and `claims.run=true` runs only the jobs without an accepted record. A record is accepted when the
code that computes numbers (`RESULT_CODE`, hashed by `code_hash`) is today's, or when a reproduction check
(`claims.reproduce=<experiment>/<key>`) reran one of its jobs on today's code and got the same numbers; the
check's evidence is kept in `results/<profile>/reproduced.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from ldm.analysis.sweep_jobs import expand
from ldm.errors import ConfigError
from ldm.rundir import read_status
from ldm.utils.io import atomic_write, read_json, write_json
from ldm.utils.machine import cpu_model

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parents[2]  # ldm/
ROOT = PACKAGE.parent
# What computes a recorded number: the science packages, the stage runner, the evaluation, and the configs they
# read. Not in it, so they can change under a running campaign: the task wrapper (status file, signals), preflight
# messages, tracking, export, the analysis package, and the launcher / logger / claims / debug configs.
RESULT_CODE = ("ldm/nets", "ldm/losses", "ldm/autoencoders", "ldm/diffusion", "ldm/data", "ldm/metrics",
               "ldm/run/stages.py", "ldm/run/callbacks.py", "ldm/run/train.py", "ldm/run/evaluation.py",
               "ldm/run/data_stats.py", "ldm/run/runtime.py", "ldm/utils/seeds.py", "ldm/utils/steps.py",
               "ldm/utils/images.py", "ldm/utils/config.py", "ldm/utils/cache.py", "ldm/utils/checkpoint.py",
               "conf/train.yaml", "conf/data", "conf/backbone", "conf/autoencoder", "conf/diffusion", "conf/sampler",
               "conf/metrics", "conf/trainer", "conf/callbacks", "conf/_shared")
TIMING = ("wall_s", "sec_per_sample", "encode_sec_per_image", "runtime/", "/key", "/cache", "/source", "/reused",
          "/resumed_from", "/checkpoint")  # metric names that say how a number was obtained, not what it is
FILES = ("samples.png", "stage1_prior.png", "plateau_stage1.json", "plateau_stage2.json")
REPRODUCED = "reproduced.json"


def code_hash(root: Path = ROOT) -> str:
    """sha256 over RESULT_CODE's files (.py and .yaml, sorted by path, path and bytes), 16 hex digits."""
    files = set()
    for part in RESULT_CODE:
        p = root / part
        files |= {p} if p.is_file() else {f for f in p.rglob("*") if f.suffix in (".py", ".yaml") and f.is_file()}
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def git_commit(root: Path = ROOT) -> str:
    """HEAD's commit, `+dirty` when the files RESULT_CODE names have uncommitted changes; `unknown` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *RESULT_CODE], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# ---- the jobs of a profile ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    experiment: str
    key: str                 # the job's directory name: its swept values and seed, e.g. autoencoder=vae,seed=0
    overrides: tuple[str, ...]

    @property
    def name(self) -> str:
        return f"{self.experiment}/{self.key}"


def job_key(job: dict[str, str], swept: list[str]) -> str:
    """`k=v,...` over the experiment's swept keys and the seed, in the order written; `/` becomes `_`."""
    shown = [k for k in job if k in swept or k == "seed"] or list(job)[-1:]
    return ",".join(f"{k}={job[k]}" for k in shown).replace("/", "_")


def jobs_of(experiments: dict[str, list[str]]) -> list[Job]:
    """Every job of every experiment ({name: multirun overrides}), with Hydra's own expansion of the sweeps."""
    out = []
    for exp, overrides in experiments.items():
        combos = expand(overrides)
        swept = [k for k in combos[0] if len({c[k] for c in combos}) > 1] if combos else []
        for c in combos:
            out.append(Job(exp, job_key(c, swept), tuple(f"{k}={v}" for k, v in c.items())))
    keys = [j.name for j in out]
    if len(set(keys)) != len(keys):
        raise ConfigError("two jobs of the profile share a record name: give each experiment distinct swept values")
    return out


# ---- writing a record -----------------------------------------------------------------------------------------
def write_record(job_dir: Path, dest: Path, job: Job, profile: str, code: str, commit: str, wall_s: float) -> dict:
    """A finished job's record under `dest` (written to a temporary folder, then renamed into place)."""
    metrics = read_status(job_dir / "metrics.json")
    stages = {s: {k.split("/", 1)[1]: metrics.get(k) for k in (f"{s}/steps", f"{s}/stop", f"{s}/cap",
                                                              f"{s}/best_step", f"{s}/wall_s") if k in metrics}
              for s in ("stage1", "stage2")}
    record = {"profile": profile, "experiment": job.experiment, "key": job.key, "overrides": list(job.overrides),
              "status": metrics["status"], "commit": commit, "code_hash": code, "machine": cpu_model(),
              "wall_s": {"job": wall_s, "stage1": metrics.get("stage1/wall_s"),
                         "stage2": metrics.get("stage2/wall_s"), "eval": metrics.get("eval/wall_s")},
              "stages": {s: v for s, v in stages.items() if v}, "metrics": metrics}
    tmp = dest.parent / f".{dest.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_json(tmp / "record.json", record)
    if (job_dir / ".hydra" / "config.yaml").is_file():
        shutil.copyfile(job_dir / ".hydra" / "config.yaml", tmp / "config.yaml")
    for name in FILES:
        if (job_dir / name).is_file():
            shutil.copyfile(job_dir / name, tmp / name)
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return record


# ---- reading records ------------------------------------------------------------------------------------------
def read_records(roots: list[Path]) -> dict[str, dict]:
    """{experiment/key: record} over every root (several machines' results); the same job in two roots must carry
    the same numbers (a conflict is an error naming both)."""
    out: dict[str, dict] = {}
    where: dict[str, Path] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for path in sorted(root.glob("*/*/record.json")):
            try:
                rec = read_json(path)
            except (ValueError, OSError) as e:
                raise ConfigError(f"record {path} is unreadable ({type(e).__name__}): restore it from git "
                                  f"(git checkout -- {path}) or delete its folder to rerun the job") from None
            name = f"{rec.get('experiment')}/{rec.get('key')}"
            if name in out and comparable(out[name]["metrics"]) != comparable(rec["metrics"]):
                raise ConfigError(f"job {name} has two records with different numbers: {where[name]} and "
                                  f"{path.parent}; keep one (delete the other folder)")
            out.setdefault(name, {**rec, "_dir": str(path.parent)})
            where.setdefault(name, path.parent)
    return out


def comparable(metrics: dict) -> dict:
    """The numbers a record states (no timings, keys or provenance)."""
    return {k: v for k, v in metrics.items() if not any(t in k for t in TIMING) and k not in ("pid", "host",
                                                                                                "started")}


def accepted_hashes(results: Path, today: str) -> set[str]:
    """Today's code hash and every hash a reproduction check linked to it (transitively)."""
    ok = {today}
    path = Path(results) / REPRODUCED
    checks = read_json(path).get("checks", []) if path.is_file() else []
    grew = True
    while grew:
        grew = False
        for c in checks:
            if c.get("agrees") and c.get("to") in ok and c.get("from") not in ok:
                ok.add(c["from"])
                grew = True
    return ok


@dataclass
class Census:
    present: list[Job]
    missing: list[Job]
    refused: list[Job]
    records: dict[str, dict]


def census(jobs: list[Job], records: dict[str, dict], accepted: set[str]) -> Census:
    present, missing, refused = [], [], []
    for j in jobs:
        rec = records.get(j.name)
        if rec is None:
            missing.append(j)
        elif rec.get("code_hash") not in accepted:
            refused.append(j)
        elif list(rec.get("overrides", [])) != list(j.overrides):
            refused.append(j)  # the profile changed this job's overrides since the record was made
        else:
            present.append(j)
    return Census(present, missing, refused, records)


# ---- the report's view of the records -------------------------------------------------------------------------
VIEW_MARK = ".records-view"


def materialize(records: list[dict], view: Path, experiments: list[str]) -> None:
    """Each experiment's accepted records as a sweep directory the tables and the criteria read
    (`<view>/<experiment>/<key>/{.hydra/overrides.yaml, .hydra/config.yaml, metrics.json, samples.png}`); a folder
    made by an earlier call is replaced, any other is refused."""
    for exp in experiments:
        d = view / exp
        if d.exists():
            if not (d / VIEW_MARK).is_file():
                raise ConfigError(f"{d} exists and was not made from records: move it away (the report of a "
                                  f"campaign profile is built from its records)")
            shutil.rmtree(d)
        d.mkdir(parents=True)
        (d / VIEW_MARK).write_text("made from campaign records by ldm.analysis.claims.records; rebuilt each report\n")
    for rec in records:
        job = view / rec["experiment"] / rec["key"]
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(rec["overrides"])))
        src = Path(rec["_dir"])
        if (src / "config.yaml").is_file():
            shutil.copyfile(src / "config.yaml", job / ".hydra" / "config.yaml")
        write_json(job / "metrics.json", rec["metrics"])
        for name in [n for n in FILES if n.endswith(".png") and (src / n).is_file()]:  # the sample grids
            shutil.copyfile(src / name, job / name)


def stopping_lines(records: list[dict], experiments: list[str]) -> list[str]:
    """The report's stopping table: per experiment and row (its swept values), each stage's stopping steps over the
    seeds and how many stopped on the plateau rule vs at the cap."""
    rows: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        row = ",".join(p for p in rec["key"].split(",") if not p.startswith("seed=")) or "(one row)"
        rows.setdefault((rec["experiment"], row), []).append(rec)
    lines = ["| experiment | row | seeds | stage 1 stopped at (batches) | stage 2 stopped at (batches) |",
             "|---|---|---|---|---|"]
    for exp in experiments:
        for (e, row), recs in sorted(rows.items()):
            if e != exp:
                continue
            cells = []
            for stage in ("stage1", "stage2"):
                info = [r.get("stages", {}).get(stage) for r in recs]
                info = [i for i in info if i and i.get("steps") is not None]
                if not info:
                    cells.append("–")
                    continue
                steps = sorted(int(i["steps"]) for i in info)
                plateau = sum(i.get("stop") == "plateau" for i in info)
                cap = info[0].get("cap")
                rule = (f"{plateau} of {len(info)} on the plateau, cap {cap}" if "stop" in info[0]
                        else "fixed budget")
                cells.append(f"{', '.join(map(str, steps))} ({rule})")
            lines.append(f"| {exp} | {row} | {len(recs)} | {cells[0]} | {cells[1]} |")
    return lines


# ---- the reproduction check -----------------------------------------------------------------------------------
def agreement(old: dict, new: dict, rtol: float) -> tuple[bool, list[str]]:
    """Whether every number of `old` (a record's metrics) is in `new` within rtol (relative, of the larger
    magnitude); the disagreements, each named with both values."""
    a, b = comparable(old), comparable(new)
    bad = []
    for k, v in a.items():
        w = b.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            if v != w:
                bad.append(f"{k}: {v!r} vs {w!r}")
            continue
        if not isinstance(w, (int, float)) or isinstance(w, bool):
            bad.append(f"{k}: {v!r} vs {w!r}")
        elif not (math.isclose(v, w, rel_tol=rtol, abs_tol=1e-12) or (math.isnan(v) and math.isnan(w))):
            bad.append(f"{k}: {v!r} vs {w!r}")
    return not bad, bad


def note_reproduction(results: Path, old_hash: str, today: str, job: str, agrees: bool, diffs: list[str],
                      rtol: float, machine: Optional[str] = None, against: str = "the record",
                      machine_drift: Optional[list[str]] = None) -> None:
    """Append one check to results/<profile>/reproduced.json (the evidence behind accepting a foreign hash):
    what today's numbers were compared with, and, where the record's code was rerun here, how far the record
    itself is from that rerun (this machine's rounding, not the code's)."""
    path = Path(results) / REPRODUCED
    doc = read_json(path) if path.is_file() else {"checks": []}
    check = {"from": old_hash, "to": today, "job": job, "agrees": agrees, "rtol": rtol, "against": against,
             "machine": machine or cpu_model(), "disagreements": diffs[:20]}
    if machine_drift is not None:
        check["record_vs_rerun_of_its_code"] = machine_drift[:20]
    doc["checks"].append(check)
    Path(results).mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2) + "\n"))
