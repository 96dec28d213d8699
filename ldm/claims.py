"""Claims as config -> verdicts: each claim names the experiment that decides it, the metric, the comparison and
the criterion, all written in conf/claims/<profile>.yaml before any run; this module reads the sweeps, applies
the criteria and writes REPORT.md. Nothing here looks at a number before the criterion is fixed.

Criterion kinds (the `kind` key), each giving `supported`, `contradicted` or `inconclusive`:

- `compare`: row `a` vs row `b` on `metric` (or `a_metric` vs `b_metric`, e.g. diffusion samples' modes vs a
  GAN's prior samples' modes; rows = override values, e.g. {autoencoder: vae}; b from `b_experiment` where
  it is another sweep, e.g. a GAN, which has no encoder and so runs stage 1 only); the claim says
  a - b has sign `sign` (+1: a larger) by more than `margin`. The 95 % interval of the difference (ldm.stats:
  paired t by seed, Welch otherwise) entirely beyond the margin on the claimed side -> supported; entirely on
  the other side of 0 -> contradicted; otherwise inconclusive (the interval includes the decision threshold).
  `relative: true` reads the margin as a share of b's mean; a negative margin states non-inferiority ('a is worse
  than b by less than |margin|'), contradicted when the interval lies wholly beyond that bound.
- `threshold`: one row's mean of `metric` vs `value`; the claim says sign * (mean - value) > 0. The row's 95 %
  t interval entirely on the claimed side -> supported, entirely on the other -> contradicted.
- `trend`: Spearman's rho between the swept value `x` and `metric` over every run of the experiment, with a
  Fisher-z 95 % interval (standard error 1.06 / sqrt(n - 3), Fieller et al., 1957); the claim says
  sign * rho > `min_rho`. Interval above min_rho -> supported; interval below 0 -> contradicted.
- `all`: several criteria (`of`); supported if all are, contradicted if any is, else inconclusive.

A criterion whose runs are missing or failed is `undecided` and names the jobs; a claim is then undecided too.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from scipy import stats as _st

from ldm import stats
from ldm.errors import ConfigError
from ldm.tables import collect, job_overrides

VERDICTS = ("supported", "contradicted", "inconclusive", "undecided")
KINDS = ("compare", "threshold", "trend", "all")


@dataclass
class Finding:
    """One criterion applied: its verdict, a sentence with the numbers, and the numbers themselves."""

    verdict: str
    text: str
    numbers: dict = field(default_factory=dict)
    parts: list["Finding"] = field(default_factory=list)


class Sweeps:
    """The jobs of each experiment's sweep directory (`root/<experiment>`), read once."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._cache: dict[str, Optional[list[dict]]] = {}

    def jobs(self, experiment: str) -> Optional[list[dict]]:
        """Records (ldm.tables.collect) with each job's full overrides, or None where the sweep does not exist."""
        if experiment not in self._cache:
            d = self.root / experiment
            if not d.is_dir():
                self._cache[experiment] = None
            else:
                records, _ = collect(d)
                for r in records:
                    r["overrides"] = job_overrides(d / r["job"])
                self._cache[experiment] = records
        return self._cache[experiment]


def _match(record: dict, row: dict) -> bool:
    return all(str(record["overrides"].get(k)) == str(v) for k, v in row.items())


def _row_label(row: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in row.items()) or "(all)"


def _select(jobs: Optional[list[dict]], row: dict, experiment: str, metric: str) -> tuple[dict, list[str]]:
    """({seed: value} of the row's ok jobs, problems naming every job without a usable value)."""
    if jobs is None:
        return {}, [f"experiment `{experiment}` has no sweep directory"]
    mine = [r for r in jobs if _match(r, row)]
    if not mine:
        return {}, [f"no job of `{experiment}` has {_row_label(row)}"]
    values, problems = {}, []
    for r in mine:
        v = r["metrics"].get(metric) if r["status"] == "ok" else None
        if r["status"] != "ok":
            problems.append(f"job {experiment}/{r['job']} ({_row_label(row)}, seed={r['seed']}) is {r['status']}")
        elif not stats.numbers([v]):
            problems.append(f"job {experiment}/{r['job']} ({_row_label(row)}, seed={r['seed']}) has no {metric}")
        else:
            values[r["seed"] if r["seed"] is not None else r["job"]] = float(v)
    return values, problems


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def _side(lo: float, hi: float, sign: int, threshold: float) -> str:
    """The verdict of an interval [lo, hi] for a claim that sign * value > threshold: supported when the whole
    interval clears the threshold on the claimed side, contradicted when it lies wholly on the other side of 0
    (the opposite effect) or, for a negative threshold (a non-inferiority claim: 'worse by less than m'), wholly
    beyond it; inconclusive otherwise."""
    lo_s, hi_s = sorted((sign * lo, sign * hi))
    if lo_s > threshold:
        return "supported"
    if hi_s < min(0.0, threshold):
        return "contradicted"
    return "inconclusive"


def compare(c: dict, sweeps: Sweeps) -> Finding:
    exp, sign, margin = c["experiment"], int(c.get("sign", 1)), float(c.get("margin", 0.0))
    ma, mb = c.get("a_metric", c.get("metric")), c.get("b_metric", c.get("metric"))  # one metric, or one per side
    metric = ma if ma == mb else f"{ma} vs {mb}"
    exp_b = c.get("b_experiment", exp)  # b from another sweep (e.g. a GAN's stage-1-only runs), paired by seed
    a, pa = _select(sweeps.jobs(exp), c["a"], exp, ma)
    b, pb = _select(sweeps.jobs(exp_b), c["b"], exp_b, mb)
    if pa or pb:
        return Finding("undecided", "; ".join(dict.fromkeys(pa + pb)))  # each problem once
    d = stats.difference(a, b)
    if d is None:
        return Finding("undecided", f"fewer than 2 seeds in {_row_label(c['a'])} or {_row_label(c['b'])}")
    relative = bool(c.get("relative", False))  # the margin as a share of b's mean (e.g. 'within 10 % of b')
    bound = margin * abs(sum(b.values()) / len(b)) if relative else margin
    verdict = _side(d["lo"], d["hi"], sign, bound)
    edge = sign * bound + 0.0  # (+ 0.0: no "-0") the claim: a - b beyond this, on the claimed side
    claimed = (f"claimed {'>' if sign > 0 else '<'} {_fmt(edge)}"
               + (f" ({_fmt(sign * margin * 100)} % of {_row_label(c['b'])})" if relative else ""))
    text = (f"{metric}: {_row_label(c['a'])} − {_row_label(c['b'])} = {_fmt(d['diff'])} "
            f"[{_fmt(d['lo'])}, {_fmt(d['hi'])}] ({d['test']}, n = {d['n']}, p = {d['p']:.3g}); {claimed}")
    return Finding(verdict, text, {"a": stats.mean_interval(list(a.values())),
                                   "b": stats.mean_interval(list(b.values())), "difference": d})


def threshold(c: dict, sweeps: Sweeps) -> Finding:
    exp, metric, sign, value = c["experiment"], c["metric"], int(c.get("sign", 1)), float(c["value"])
    vals, problems = _select(sweeps.jobs(exp), c["row"], exp, metric)
    if problems:
        return Finding("undecided", "; ".join(problems))
    s = stats.mean_interval(list(vals.values()))
    if s["lo"] is None:
        return Finding("undecided", f"fewer than 2 seeds in {_row_label(c['row'])}")
    verdict = _side(s["lo"] - value, s["hi"] - value, sign, 0.0)
    text = (f"{metric} of {_row_label(c['row'])} = {_fmt(s['mean'])} [{_fmt(s['lo'])}, {_fmt(s['hi'])}] "
            f"(n = {s['n']}); claimed {'>' if sign > 0 else '<'} {_fmt(value)}")
    return Finding(verdict, text, {"row": s})


def spearman_interval(x: list[float], y: list[float], level: float = stats.LEVEL) -> dict:
    """Spearman's rho with a Fisher-z interval (standard error 1.06 / sqrt(n - 3))."""
    n = len(x)
    rho = float(_st.spearmanr(x, y).statistic) if n > 2 else float("nan")
    if n < 4 or not math.isfinite(rho):
        return {"rho": rho, "lo": None, "hi": None, "n": n}
    z, half = math.atanh(max(-0.999999, min(0.999999, rho))), _st.norm.ppf(0.5 + level / 2) * 1.06 / math.sqrt(n - 3)
    return {"rho": rho, "lo": math.tanh(z - half), "hi": math.tanh(z + half), "n": n}


def trend(c: dict, sweeps: Sweeps) -> Finding:
    exp, metric, key = c["experiment"], c["metric"], c["x"]
    sign, min_rho = int(c.get("sign", 1)), float(c.get("min_rho", 0.0))
    jobs = sweeps.jobs(exp)
    vals, problems = _select(jobs, c.get("row", {}), exp, metric)
    if problems:
        return Finding("undecided", "; ".join(problems))
    xs, ys = [], []
    for r in jobs or []:
        if _match(r, c.get("row", {})) and r["status"] == "ok" and stats.numbers([r["metrics"].get(metric)]):
            try:
                xs.append(float(r["overrides"][key]))
            except (KeyError, ValueError):
                return Finding("undecided", f"job {exp}/{r['job']} has no numeric override {key}")
            ys.append(float(r["metrics"][metric]))
    s = spearman_interval(xs, ys)
    if s["lo"] is None:
        return Finding("undecided", f"{len(xs)} runs of `{exp}`: a rank correlation needs at least 4")
    verdict = _side(s["lo"], s["hi"], sign, min_rho)
    text = (f"Spearman ρ({key}, {metric}) = {_fmt(s['rho'])} [{_fmt(s['lo'])}, {_fmt(s['hi'])}] over {s['n']} "
            f"runs; claimed {'+' if sign > 0 else '−'}ρ > {_fmt(min_rho)}")
    return Finding(verdict, text, {"spearman": s})


def all_of(c: dict, sweeps: Sweeps) -> Finding:
    parts = [decide(p, sweeps) for p in c["of"]]
    verdicts = {p.verdict for p in parts}
    if "undecided" in verdicts:
        verdict = "undecided"
    elif "contradicted" in verdicts:
        verdict = "contradicted"
    elif verdicts == {"supported"}:
        verdict = "supported"
    else:
        verdict = "inconclusive"
    return Finding(verdict, f"all of {len(parts)} criteria", parts=parts)


def decide(criterion: dict, sweeps: Sweeps) -> Finding:
    """Apply one criterion (see the module docstring) to the sweeps under `sweeps.root`."""
    kind = criterion.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"claim criterion kind={kind!r}: choose one of {', '.join(KINDS)}")
    return {"compare": compare, "threshold": threshold, "trend": trend, "all": all_of}[kind](criterion, sweeps)


def verdicts(cfg: dict, root: Path) -> dict[str, Finding]:
    """Every claim of a profile config (`claims: {C1: {statement, criterion, ...}}`) decided on `root`'s sweeps."""
    claims = cfg.get("claims") or {}
    if not claims:
        raise ConfigError("the claims profile lists no claims (conf/claims/<profile>.yaml: claims: {C1: ...})")
    sweeps = Sweeps(root)
    return {name: decide(c["criterion"], sweeps) for name, c in claims.items()}


def experiments_of(criterion: dict) -> list[str]:
    """The sweeps a criterion reads (its `experiment`, `b_experiment`, and those of its parts), in order."""
    out: list[str] = []
    for c in [criterion, *(criterion.get("of") or [])]:
        if c is not criterion:
            out += [e for e in experiments_of(c) if e not in out]
            continue
        out += [e for e in (c.get("experiment"), c.get("b_experiment")) if e and e not in out]
    return out


def metrics_of(criterion: dict, experiment: str) -> list[str]:
    """The metrics a criterion reads from one experiment (the columns its table must show)."""
    out: list[str] = []
    for c in [criterion, *(criterion.get("of") or [])]:
        if c is not criterion:
            out += [m for m in metrics_of(c, experiment) if m not in out]
            continue
        sides = [("experiment", c.get("a_metric", c.get("metric"))),
                 ("b_experiment" if c.get("b_experiment") else "experiment", c.get("b_metric", c.get("metric")))]
        out += [m for key, m in sides if m and c.get(key) == experiment]
    return list(dict.fromkeys(out))  # each once, in order


def _details(f: Finding, depth: int = 0) -> list[str]:
    pad = "  " * depth
    lines = [f"{pad}- **{f.verdict}**: {f.text}"]
    for p in f.parts:
        lines += _details(p, depth + 1)
    return lines


def report(cfg: dict, root: Path, findings: dict[str, Finding], commands: list[str]) -> str:
    """REPORT.md: the verdict table, then per claim the pre-stated criterion, the numbers and the scope.
    Deterministic (no dates, fixed order), so the same sweeps give the same bytes."""
    lines = [f"# Claims report: {cfg.get('profile', '?')} profile", "",
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


# ---- running a profile ----------------------------------------------------------------------------------------
def jobs_of(cfg: dict) -> dict[str, list[str]]:
    """experiment -> the train.py multirun overrides of its sweep (common + the experiment's + the seeds)."""
    return {name: [*cfg.get("common", []), *overrides, f"seed={cfg.get('seeds', '0,1,2')}"]
            for name, overrides in (cfg.get("experiments") or {}).items()}


def count_jobs(overrides: list[str]) -> int:
    n = 1
    for o in overrides:
        if "=" in o and "," in o.split("=", 1)[1] and not o.split("=", 1)[1].startswith("["):
            n *= len(o.split("=", 1)[1].split(","))
    return n


def sweep_complete(sweep_dir: Path, expected: int) -> bool:
    """Whether a sweep directory holds `expected` jobs, every one finished ok (then it is not run again)."""
    if not sweep_dir.is_dir():
        return False
    records, _ = collect(sweep_dir)
    return len(records) >= expected and all(r["status"] == "ok" for r in records)


def command(name: str, overrides: list[str], root: Path, n_jobs: int,
            launcher: Optional[list[str]] = None) -> list[str]:
    """One experiment's train.py multirun: joblib with `n_jobs` side by side, or the profile's `launcher`
    overrides (e.g. submitit on SLURM: [hydra/launcher=submitit_slurm, hydra.launcher.gpus_per_node=1, ...])."""
    launch = list(launcher) if launcher else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]
    return ["train.py", "-m", *overrides, f"hydra.sweep.dir={root / name}", *launch]


def run_experiments(todo: list[str], n_jobs: int, launch: Callable[[str, int], int],
                    sizes: Optional[dict[str, float]] = None) -> dict[str, int]:
    """Run the missing experiments (their names) with `n_jobs` CPUs; `launch(name, jobs_side_by_side)` runs
    one experiment's multirun and returns its exit status. One experiment alone gets every CPU; several run
    side by side, one job at a time each, largest first (by `sizes`, e.g. the estimated job-seconds), each CPU
    taking the next experiment when its current one ends. One experiment per CPU (not one multirun after the
    other, each with n_jobs) keeps both CPUs busy through the tail of a sweep whose job count is odd: the quick
    profile's 3-job sweeps left one CPU idle for most of their length. Returns {name: exit status}."""
    from concurrent.futures import ThreadPoolExecutor

    order = sorted(todo, key=lambda name: -(sizes or {}).get(name, 0.0))  # stable: the profile's order among equals
    lanes = max(1, min(n_jobs, len(order)))
    if lanes == 1:
        return {name: launch(name, n_jobs) for name in order}
    with ThreadPoolExecutor(lanes) as pool:
        futures = {name: pool.submit(launch, name, max(1, n_jobs // lanes)) for name in order}
        return {name: f.result() for name, f in futures.items()}


# ---- how long a profile takes (the dry run's estimate) -------------------------------------------------------
# Fallback job rates (1 thread, this project's 2-core reference machine, benchmarks/RESULTS.md section 4): stage-1
# and stage-2 steps per second of a latent row, stage-2 steps per second of the pixel row, seconds per generated
# sample, start-up + fixed evaluation seconds per job.
RATES = {"stage1_steps_per_s": 4.42, "stage2_steps_per_s": 4.71, "pixel_stage2_steps_per_s": 0.545,
         "gen_sec_per_sample": 0.026, "pixel_gen_sec_per_sample": 0.206, "fixed_s": 22.0, "gpu_step_s": 0.00266}


def measured_rates(results_json: Path) -> dict:
    """RATES, replaced by the job rates a `benchmarks/bench.py` run measured on this machine where it has them."""
    rates = dict(RATES)
    try:
        results = json.loads(Path(results_json).read_text())["results"]
        summary = results["jobs"]["summary"]
        vae, pixel = summary["vae"], summary.get("identity", {})
        rates["stage1_steps_per_s"] = vae["stage1_steps_per_s"]["median"]
        rates["stage2_steps_per_s"] = vae["stage2_steps_per_s"]["median"]
        rates["gen_sec_per_sample"] = vae["gen_sec_per_sample"]["median"]
        rates["fixed_s"] = vae["eval_s"]["median"] + vae["other_s"]["median"]
        plan = results.get("plan", {}).get("estimates", {})
        rates["gpu_step_s"] = plan.get("latent job (e.g. vae)", {}).get("gpu_step_s", rates["gpu_step_s"])
        if pixel.get("stage2_steps_per_s"):
            rates["pixel_stage2_steps_per_s"] = pixel["stage2_steps_per_s"]["median"]
            rates["pixel_gen_sec_per_sample"] = pixel["gen_sec_per_sample"]["median"]
    except (OSError, KeyError, TypeError, ValueError):
        pass
    return rates


def expand(overrides: list[str]) -> list[dict]:
    """The jobs of one multirun: every combination of the comma-separated override values, as {key: value}."""
    import itertools

    keys, choices = [], []
    for o in overrides:
        if "=" not in o:
            continue
        k, v = o.split("=", 1)
        keys.append(k)
        choices.append(v.split(",") if "," in v and not v.startswith("[") else [v])
    return [dict(zip(keys, combo)) for combo in itertools.product(*choices)]


def estimate_job_s(job: dict, defaults: dict, rates: dict, gpu: bool = False) -> float:
    """Seconds one job takes at `rates`: its stages' steps at the measured step rates, its samples, fixed costs.
    Rows without stage 1 (identity) train the pixel diffusion, rows without an encoder (gan) have no stage 2;
    a job whose stages are cached elsewhere in the profile is still counted (an upper bound). `gpu`: every step
    at the bench plan's modelled GPU step time (these small networks are kernel-launch bound there) plus the
    CPU-measured fixed and sampling costs (an upper bound: evaluation also runs on the GPU)."""
    ae = job.get("autoencoder", defaults.get("autoencoder", "vae"))
    stage = job.get("stage", "all")
    s1 = int(job.get("stage1.max_steps", defaults.get("stage1.max_steps", 1000)))
    s1 += extra_stage1_steps(ae, job, s1)
    s2 = int(job.get("stage2.max_steps", defaults.get("stage2.max_steps", 1200)))
    n = int(job.get("metrics.num_samples", defaults.get("metrics.num_samples", 180)))
    t = rates["fixed_s"]
    if ae != "identity" and stage != "stage2":
        t += s1 * rates["gpu_step_s"] if gpu else s1 / rates["stage1_steps_per_s"]
    if ae != "gan" and stage != "stage1":
        prefix = "pixel_" if ae == "identity" else ""
        t += s2 * rates["gpu_step_s"] if gpu else s2 / rates[prefix + "stage2_steps_per_s"]
        t += n * rates[prefix + "gen_sec_per_sample"]
    return t


def extra_stage1_steps(ae: str, job: dict, s1: int) -> int:
    """Stage-1 batches a row runs beyond stage1.max_steps (gan_inversion_matched's encoder_steps): the job's
    `autoencoder.encoder_steps` override, else the row's YAML value, where `${stage1.max_steps}` means s1."""
    value = job.get("autoencoder.encoder_steps")
    if value is None:
        path = Path(__file__).resolve().parent.parent / "conf" / "autoencoder" / f"{ae}.yaml"
        value = (yaml.safe_load(path.read_text()) or {}).get("encoder_steps") if path.is_file() else None
    if value is None or str(value) == "null":
        return 0
    return s1 if str(value) == "${stage1.max_steps}" else int(value)


def estimate_profile_s(jobs: dict[str, list[str]], n_jobs: int, rates: dict) -> dict[str, float]:
    """{experiment: job-seconds} and the wall-clock estimate with `n_jobs` side by side ('wall')."""
    out = {name: sum(estimate_job_s(j, {}, rates) for j in expand(ov)) for name, ov in jobs.items()}
    out["wall"] = sum(out.values()) / max(1, n_jobs)
    out["gpu_hours"] = sum(estimate_job_s(j, {}, rates, gpu=True) for ov in jobs.values() for j in expand(ov)) / 3600
    return out


# ---- the README's Results summary, generated from reports ---------------------------------------------------
BEGIN, END = "<!-- claims-summary:begin", "<!-- claims-summary:end -->"


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


def splice_readme(readme: Path, report_dirs: list[Path], command: str) -> None:
    """Replace the README's text between the claims-summary markers with `summary(report_dirs)` (atomic write)."""
    from ldm.utils.io import atomic_write

    text = Path(readme).read_text()
    if BEGIN not in text or END not in text:
        raise ConfigError(f"{readme} has no '{BEGIN} ... -->' / '{END}' markers to write the summary between")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = f"{BEGIN} generated by: {command} -->\n{summary(report_dirs)}{END}"
    atomic_write(Path(readme), lambda tmp: Path(tmp).write_text(head + body + tail))


PUBLISHED = ("table.md", "table.csv", "table_converged.md")


def _check_report(d: Path) -> None:
    if not (Path(d) / "REPORT.md").is_file() or not (Path(d) / "verdicts.json").is_file():
        raise ConfigError(f"{d} holds no REPORT.md and verdicts.json: run evaluate.py claims=<profile> first")


def publish(src: Path, dst: Path) -> list[Path]:
    """Copy a report out of logs/ into the repository: REPORT.md, verdicts.json and each experiment's table and
    figures (not the job directories), keeping REPORT.md's relative links; files go to temp names, then rename."""
    import shutil

    _check_report(src)
    files = [src / "REPORT.md", src / "verdicts.json"]
    for exp in sorted(p for p in src.iterdir() if p.is_dir()):
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


def main(argv: Optional[list[str]] = None) -> int:
    """python -m ldm.claims readme README.md <report dir> [...]  |  python -m ldm.claims publish <src> <dst>"""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: python -m ldm.claims readme README.md <report dir> [<report dir> ...]\n"
             "       python -m ldm.claims publish logs/claims/<profile> docs/claims/<profile>")
    if not ((len(args) >= 3 and args[0] == "readme") or (len(args) == 3 and args[0] == "publish")):
        print(usage, file=sys.stderr)
        return 2
    try:
        if args[0] == "publish":
            for f in publish(Path(args[1]), Path(args[2])):
                print(f)
            return 0
        for d in args[2:]:
            _check_report(Path(d))
        splice_readme(Path(args[1]), [Path(d) for d in args[2:]], "python -m ldm.claims " + " ".join(args))
    except (ConfigError, OSError, ValueError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
