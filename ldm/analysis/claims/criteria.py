"""Claims as config -> verdicts: each claim names the experiment that decides it, the metric, the comparison and
the criterion, all written in conf/claims/<profile>.yaml before any run; this module reads the sweeps and applies
the criteria (`render` writes REPORT.md). Nothing here looks at a number before the criterion is fixed.

Criterion kinds (the `kind` key), each giving `supported`, `contradicted` or `inconclusive`:

- `compare`: row `a` vs row `b` on `metric` (or `a_metric` vs `b_metric`, e.g. diffusion samples' modes vs a
  GAN's prior samples' modes; rows = override values, e.g. {autoencoder: vae}; b from `b_experiment` where
  it is another sweep, e.g. a GAN, which has no encoder and so runs stage 1 only); the claim says
  a - b has sign `sign` (+1: a larger) by more than `margin`. The 95 % interval of the difference (statistics:
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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from scipy import stats as _st

from ldm.analysis import statistics
from ldm.analysis.collect import collect
from ldm.errors import ConfigError
from ldm.rundir import job_overrides

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
        """Records (`collect`) with each job's full overrides, or None where the sweep does not exist."""
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
        elif not statistics.numbers([v]):
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
    d = statistics.difference(a, b)
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
    return Finding(verdict, text, {"a": statistics.mean_interval(list(a.values())),
                                   "b": statistics.mean_interval(list(b.values())), "difference": d})


def threshold(c: dict, sweeps: Sweeps) -> Finding:
    exp, metric, sign, value = c["experiment"], c["metric"], int(c.get("sign", 1)), float(c["value"])
    vals, problems = _select(sweeps.jobs(exp), c["row"], exp, metric)
    if problems:
        return Finding("undecided", "; ".join(problems))
    s = statistics.mean_interval(list(vals.values()))
    if s["lo"] is None:
        return Finding("undecided", f"fewer than 2 seeds in {_row_label(c['row'])}")
    verdict = _side(s["lo"] - value, s["hi"] - value, sign, 0.0)
    text = (f"{metric} of {_row_label(c['row'])} = {_fmt(s['mean'])} [{_fmt(s['lo'])}, {_fmt(s['hi'])}] "
            f"(n = {s['n']}); claimed {'>' if sign > 0 else '<'} {_fmt(value)}")
    return Finding(verdict, text, {"row": s})


def spearman_interval(x: list[float], y: list[float], level: float = statistics.LEVEL) -> dict:
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
        if _match(r, c.get("row", {})) and r["status"] == "ok" and statistics.numbers([r["metrics"].get(metric)]):
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

