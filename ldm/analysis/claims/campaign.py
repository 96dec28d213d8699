"""Running a claims profile as a campaign (a profile with `results:`): the jobs without an accepted record are run,
each finished job's record is written (and, with `commit_records: true`, committed) as it lands, and the report is
built from the records of every machine (ldm.analysis.claims.records).

    evaluate.py claims=<profile> claims.dry_run=true     what is recorded, refused and missing; the missing priced
    evaluate.py claims=<profile> claims.run=true         run the missing jobs, then the report (make claims-<profile>)
    evaluate.py claims=<profile>                         the report from the records alone
    evaluate.py claims=<profile> claims.reproduce=<experiment>/<key>
                                                         rerun one recorded job on today's code: same numbers
                                                         accept its code hash's records, different ones do not
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from ldm.analysis.claims import estimate, records
from ldm.analysis.claims.records import Census, Job
from ldm.errors import ConfigError, UserError
from ldm.rundir import read_status

log = logging.getLogger(__name__)
RECORDED = ("ok", "diverged")  # a diverged job is a result; a failed one (a crash) is rerun next time


def roots(profile: dict) -> tuple[Path, list[Path]]:
    base = Path(os.environ.get("LDM_ROOT", "."))
    results = base / profile["results"]
    return results, [results, *(base / m for m in (profile.get("merge") or []))]


def plan(profile: dict) -> list[Job]:
    from ldm.analysis.claims.runner import jobs_of

    return records.jobs_of(jobs_of(profile))


def train_command(job: Job, work: Path, launcher: Optional[list[str]], threads: Optional[int]) -> list[str]:
    """train.py for one job into `work` (its run directory); a cluster launcher gets a one-job multirun."""
    extra = [f"threads={threads}"] if threads else []
    if launcher:
        return ["train.py", "-m", *job.overrides, *extra, f"hydra.sweep.dir={quoted(work.parent)}",
                f"hydra.sweep.subdir={quoted(work.name)}", *launcher]
    return ["train.py", *job.overrides, *extra, f"hydra.run.dir={quoted(work)}"]


def quoted(path) -> str:
    """A path as a quoted Hydra override value (job keys hold `=` and `,`)."""
    text = str(path)
    if "'" in text:
        raise ConfigError(f"path {text} holds a single quote, which a Hydra override cannot carry here: rename it")
    return f"'{text}'"


def run_jobs(todo: list[Job], lanes: int, one: Callable[[Job], None]) -> None:
    """`one(job)` for every job, `lanes` at a time (each taking the next job when its current one ends)."""
    if lanes <= 1:
        for j in todo:
            one(j)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(lanes) as pool:
        for f in [pool.submit(one, j) for j in todo]:
            f.result()


class Recorder:
    """Runs a job, writes its record, optionally commits it; one git commit at a time."""

    def __init__(self, profile: dict, root: Path, results: Path, today: str) -> None:
        self.profile, self.root, self.results, self.today = profile, root, results, today
        self.lock = threading.Lock()
        self.done: list[str] = []
        self.failed: list[str] = []

    def __call__(self, job: Job) -> None:
        work = self.root / "_jobs" / job.experiment / job.key
        shutil.rmtree(work, ignore_errors=True)  # an interrupted attempt: its finished stages come from the cache
        work.parent.mkdir(parents=True, exist_ok=True)
        launcher = self.profile.get("launcher")
        threads = None if launcher else int(self.profile.get("threads") or 1)
        cmd = train_command(job, work, launcher, threads)
        log.info("job %s: started (output %s.log)", job.name, work)
        t0 = time.time()
        with open(f"{work}.log", "w") as out:
            code = subprocess.run([sys.executable, *cmd], cwd=os.environ.get("LDM_ROOT", "."), stdout=out,
                                  stderr=subprocess.STDOUT).returncode
        wall = time.time() - t0
        status = read_status(work / "metrics.json")["status"]
        if status not in RECORDED:
            log.error("job %s: %s (exit %d) after %.1f min, no record; see %s.log", job.name, status, code,
                      wall / 60, work)
            self.failed.append(f"{job.name} ({work}.log)")
            return
        now = records.code_hash()
        if now != self.today:
            log.error("job %s: the code that computes numbers changed while it ran (%s -> %s): no record",
                      job.name, self.today, now)
            self.failed.append(f"{job.name} (code changed while it ran)")
            return
        dest = self.results / job.experiment / job.key
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            records.write_record(work, dest, job, self.profile["profile"], self.today, records.git_commit(), wall)
            self.done.append(job.name)
            log.info("job %s: %s in %.1f min, record %s", job.name, status, wall / 60, dest)
            if self.profile.get("commit_records"):
                commit(dest, f"{self.profile['profile']} record {job.name}: {status}, {wall / 60:.1f} min")


def commit(path: Path, message: str) -> None:
    """`git add` + `git commit` of one record folder only (pathspec), so a campaign's records survive the machine."""
    cwd = os.environ.get("LDM_ROOT", ".")
    try:
        subprocess.run(["git", "add", "--", str(path)], cwd=cwd, check=True, capture_output=True)
        subprocess.run(["git", "commit", "-q", "-m", message, "--", str(path)], cwd=cwd, check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        log.warning("record %s written but not committed (%s): commit it by hand", path,
                    getattr(e, "stderr", b"").decode(errors="replace").strip() or e)


def describe(c: Census, today: str) -> list[str]:
    n = len(c.present) + len(c.missing) + len(c.refused)
    machines = sorted({c.records[j.name].get("machine", "?") for j in c.present})
    lines = [f"{len(c.present)} of {n} jobs have an accepted record (code hash {today}); {len(c.missing)} missing, "
             f"{len(c.refused)} refused (made by other code, or for other overrides, and not reproduced)."]
    if machines:
        lines.append("Measured on: " + "; ".join(machines) + ".")
    return lines


def run(profile: dict, root: Path, real: Optional[Callable[[Path, Path], Optional[Path]]] = None) -> dict:
    results, sources = roots(profile)
    jobs = plan(profile)
    today = records.code_hash()
    found = records.read_records(sources)
    c = records.census(jobs, found, records.accepted_hashes(results, today))
    if profile.get("reproduce"):
        return reproduce(profile, root, results, jobs, found, today, str(profile["reproduce"]))
    for line in describe(c, today):
        log.info(line)
    for j in c.refused:
        rec = found[j.name]
        log.warning("record %s refused: code hash %s (today %s)%s; check it with claims.reproduce=%s, or rerun it "
                    "with claims.run=true", j.name, rec.get("code_hash"), today,
                    "" if list(rec.get("overrides", [])) == list(j.overrides) else ", other overrides", j.name)
    todo = c.missing + c.refused
    n_jobs = int(profile.get("n_jobs") or len(os.sched_getaffinity(0)))
    rates = estimate.measured_rates(Path(os.environ.get("LDM_ROOT", ".")) / "benchmarks" / "results.json")
    defaults = estimate.train_defaults()
    sizes = {j.name: estimate.estimate_job_s(dict(o.split("=", 1) for o in j.overrides), defaults, rates)
             for j in todo}
    if profile.get("dry_run"):
        by_exp: dict[str, list[int]] = {}
        for j in jobs:
            state = 0 if j in c.present else 1 if j in c.missing else 2
            by_exp.setdefault(j.experiment, [0, 0, 0])[state] += 1
        for exp, (p, m, r) in by_exp.items():
            print(f"{exp}: {p + m + r} jobs, {p} recorded, {m} missing, {r} refused")
        total = sum(sizes.values())
        print(f"{len(todo)} jobs to run, {n_jobs} at a time: at most {total / 3600:.1f} core-hours, about "
              f"{total / n_jobs / 3600:.1f} h here (every stage at its cap: a plateau stop ends sooner; job rates "
              f"from benchmarks/results.json)")
        return {}
    failed: list[str] = []
    if profile.get("run") and todo:
        # seed-major, largest first within a seed: an interrupted campaign has whole seeds of every row
        todo.sort(key=lambda j: (next((o for o in j.overrides if o.startswith("seed=")), ""), -sizes[j.name]))
        lanes = 1 if profile.get("launcher") else n_jobs
        rec = Recorder(profile, root, results, today)
        run_jobs(todo, lanes, rec)
        failed = rec.failed
        found = records.read_records(sources)
        c = records.census(jobs, found, records.accepted_hashes(results, today))
    out = report(profile, root, c, today, real)
    if failed:
        more = " ..." if len(failed) > 4 else ""
        raise UserError(f"{len(failed)} job(s) ended without a record: {', '.join(failed[:4])}{more}; the report "
                        f"covers the rest; claims.run=true retries them")
    return out


def report(profile: dict, root: Path, c: Census, today: str,
           real: Optional[Callable[[Path, Path], Optional[Path]]] = None) -> dict:
    from ldm.analysis.claims.runner import decide

    experiments = list((profile.get("experiments") or {}))
    accepted = [c.records[j.name] for j in c.present]
    root.mkdir(parents=True, exist_ok=True)
    records.materialize(accepted, root, experiments)
    lines = describe(c, today) + ["", *records.stopping_lines(accepted, experiments)]
    if c.missing or c.refused:
        lines += ["", "Not in this report (no accepted record): "
                  + ", ".join(j.name for j in c.missing + c.refused) + "."]
    name = profile["profile"]
    commands = [f".venv/bin/python evaluate.py claims={name} claims.run=true   # the jobs without a record, then this",
                f".venv/bin/python evaluate.py claims={name}                  # the report from {profile['results']}"]
    return decide(profile, root, commands, lines, real)


def reproduce(profile: dict, root: Path, results: Path, jobs: list[Job], found: dict, today: str,
              name: str) -> dict:
    """Rerun the recorded job `name` on today's code (stages retrained, not taken from the cache) and compare.

    Float results depend on the CPU as well as the code (AVX2 and AVX-512 kernels round differently: ~1e-5
    relative, bigan_untrained/seed=0 recorded on an Intel Xeon and rerun with the same code on an AMD EPYC).
    So where git still holds the record's commit and that commit hashes to the record's code hash, the job is
    also rerun *here* on the record's code, and today's numbers are compared with that rerun: the check then
    isolates the code change, at the same rtol. Without that commit today's numbers are compared with the
    record itself. Both comparisons go to reproduced.json (the record's distance from the rerun is this
    machine's drift, not the code's)."""
    job = next((j for j in jobs if j.name == name), None)
    if job is None or name not in found:
        have = ", ".join(sorted(found)[:6]) or "none"
        raise ConfigError(f"claims.reproduce={name}: no recorded job of that name in {results}; "
                          f"records: {have}{' ...' if len(found) > 6 else ''}")
    rec = found[name]
    rerun = Job(job.experiment, job.key, tuple(rec["overrides"]) + ("cache.stage1=false", "cache.stage2=false"))
    threads = int(profile.get("threads") or 1)
    here = Path(os.environ.get("LDM_ROOT", ".")).resolve()
    log.info("reproducing %s (record code hash %s, today %s)", name, rec.get("code_hash"), today)
    new = _rerun(rerun, root / "_reproduce" / job.experiment / job.key, threads, here)
    rtol = float(profile["reproduce_rtol"])
    baseline, why = _rerun_at_record(rec, rerun, root / "_reproduce_record" / job.experiment / job.key, threads, here)
    against = rec["metrics"] if baseline is None else baseline
    agrees, diffs = records.agreement(against, new, rtol)
    drift = records.agreement(rec["metrics"], baseline, rtol)[1] if baseline is not None else None
    records.note_reproduction(results, rec.get("code_hash", "?"), today, name, agrees, diffs, rtol,
                              against="the record's code rerun on this machine" if baseline is not None
                              else f"the record ({why})", machine_drift=drift)
    what = "the record's code rerun on this machine" if baseline is not None else "the record"
    if not agrees:
        shown = "; ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")
        raise UserError(f"claims.reproduce={name}: today's code gives other numbers than {what} ({shown}); records "
                        f"made with code hash {rec.get('code_hash')} stay refused: rerun them with claims.run=true")
    extra = f"; the record itself differs from this machine's rerun in {len(drift)} numbers (CPU rounding)" \
        if drift else ""
    print(f"{name}: reproduced on today's code (every number within rtol {rtol} of {what}{extra}); records with "
          f"code hash {rec.get('code_hash')} are accepted (evidence in {results / records.REPRODUCED})")
    return {"claims/reproduced": name}


def _rerun(job: Job, work: Path, threads: int, code: Path) -> dict:
    """Run `job` with the code in `code` into `work`; its metrics.json."""
    shutil.rmtree(work, ignore_errors=True)
    work.parent.mkdir(parents=True, exist_ok=True)
    cmd = train_command(job, work, None, threads)
    log.info("  %s: %s", code, " ".join(cmd))
    with open(f"{work}.log", "w") as out:
        subprocess.run([sys.executable, *cmd], cwd=code, stdout=out, stderr=subprocess.STDOUT,
                       env={**os.environ, "LDM_ROOT": str(code)})
    return read_status(work / "metrics.json")


def _rerun_at_record(rec: dict, job: Job, work: Path, threads: int, here: Path) -> tuple[Optional[dict], str]:
    """The job rerun on this machine with the code the record was made by (a temporary git worktree of its
    commit), or (None, why not): no commit, a dirty one, not in this clone, or one whose code hash differs."""
    commit = str(rec.get("commit") or "")
    if not commit or commit == "unknown" or commit.endswith("+dirty"):
        return None, f"its commit {commit or 'unknown'} is not a clean one"
    if subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=here, capture_output=True).returncode:
        return None, f"commit {commit[:12]} is not in this clone"
    tree = Path(tempfile.mkdtemp(prefix="ldm-record-code-")) / "code"
    try:
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), commit], cwd=here, check=True,
                       capture_output=True)
        if records.code_hash(tree) != rec.get("code_hash"):
            return None, f"commit {commit[:12]} hashes to {records.code_hash(tree)}, not {rec.get('code_hash')}"
        return _rerun(job, work, threads, tree), ""
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=here, capture_output=True)
        shutil.rmtree(tree.parent, ignore_errors=True)
