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
- `rank` (C0, the question itself): the same generation metric on several rows, each `{experiment, row, label}`
  (rows from different sweeps are paired by seed); the claim says the `claim` row is non-inferior to every other
  row: sign * (claim - other) > -margin (x the other row's mean where `relative`). One test per other row, so the
  claim row is compared with each and never with a best picked from the data. The report also ranks every row and
  marks which are non-inferior to the best by mean (Holm over those comparisons).
- `all`: several criteria (`of`); supported if all are, contradicted if any is, else inconclusive.

Multiplicity and power (the profile's `multiplicity: holm`, the only rule): a claim's sub-tests (the leaves of its
`all`, the comparisons of a `rank`) form one family. Each leaf gives two one-sided p-values, for its claimed side
beyond the threshold (support) and for the opposite side (contradiction), and Holm's step-down rule at 0.025 (the
level of a 95 % two-sided interval, so a single test's verdict is the interval's) is applied to each set: a leaf is
supported or contradicted only where Holm rejects. `supported` for an all-of needs every leaf (an intersection-union
test, valid without correction; Holm makes it conservative), while `contradicted` needs any one leaf (a union,
which needs the correction). Each leaf prints its minimum detectable effect (80 % power at Holm's strictest level,
alpha / m, from the spread the seeds showed); a leaf that is neither supported nor contradicted and whose declared
`effect` (the smallest effect the claim is about, stated before the run) is below that MDE is `underpowered`, not
`inconclusive`: the run could not have told. A zero spread (every seed gave the same value) has no test: it is
reported as such and stays inconclusive.

A criterion whose runs are missing or failed is `undecided` and names the jobs; a claim is then undecided too.
`a_label` / `b_label` name a compare's rows in the text (default: their overrides).

Why this module is long: every criterion kind, the multiplicity and power rules and the negative controls are
one schema, read together; split, each part would import the others' private helpers.
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

VERDICTS = ("supported", "contradicted", "inconclusive", "underpowered", "undecided")
KINDS = ("compare", "threshold", "trend", "rank", "all")
ONE_SIDED = statistics.ALPHA / 2  # each one-sided test, the level of the 95 % two-sided intervals


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


def _same(a: object, b: object) -> bool:
    """Override values as the sweep wrote them vs as a criterion names them: numbers by value (Hydra's sweeper
    writes `1e-2` as 0.01), everything else as text."""
    if str(a) == str(b):
        return True
    try:
        return float(str(a)) == float(str(b))
    except ValueError:
        return False


def _match(record: dict, row: dict) -> bool:
    return all(_same(record["overrides"].get(k), v) for k, v in row.items())


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


def _test(estimate: float, se: float, df: Optional[float], threshold: float, effect: Optional[float],
          zero_spread: bool = False) -> dict:
    """A leaf's test, in the claimed direction: `estimate` = sign * effect, the claim says estimate > threshold,
    the opposite effect is estimate < min(0, threshold). Holm (`adjust`) reads the two one-sided p-values."""
    contra = min(0.0, threshold)
    return {"estimate": estimate, "se": se, "df": df, "threshold": threshold, "contra": contra,
            "p_support": None if zero_spread else statistics.one_sided_p(estimate, se, df, threshold),
            "p_contra": None if zero_spread else statistics.one_sided_p(-estimate, se, df, -contra),
            "effect": effect, "zero_spread": zero_spread}


def _effect(c: dict) -> Optional[float]:
    """The criterion's declared effect (the smallest effect the claim is about, stated with it), or None."""
    return None if c.get("effect") is None else float(c["effect"])


def _difference_finding(label_a: str, label_b: str, metric: str, a: dict, b: dict, sign: int, margin: float,
                        relative: bool, effect: Optional[float]) -> Finding:
    """a - b against the claim sign * (a - b) > margin (x |mean b| where relative)."""
    d = statistics.difference(a, b)
    if d is None:
        return Finding("undecided", f"fewer than 2 seeds in {label_a} or {label_b}")
    scale = abs(sum(b.values()) / len(b)) if relative else 1.0
    bound = margin * scale
    edge = sign * bound + 0.0  # (+ 0.0: no "-0") the claim: a - b beyond this, on the claimed side
    claimed = (f"claimed {'>' if sign > 0 else '<'} {_fmt(edge)}"
               + (f" ({_fmt(sign * margin * 100 + 0.0)} % of {label_b})" if relative and margin else ""))
    if d["zero_spread"]:
        spread = f"zero spread: every seed gave {_fmt(d['diff'])}, no test"
        verdict = "inconclusive"
    else:
        spread = f"[{_fmt(d['lo'])}, {_fmt(d['hi'])}] ({d['test']}, n = {d['n']}, p = {d['p']:.3g})"
        verdict = _side(d["lo"], d["hi"], sign, bound)
    text = f"{metric}: {label_a} − {label_b} = {_fmt(d['diff'])} {spread}; {claimed}"
    test = _test(sign * d["diff"], d["se"], d["df"], bound, None if effect is None else effect * scale,
                 d["zero_spread"])
    return Finding(verdict, text, {"a": statistics.mean_interval(list(a.values())),
                                   "b": statistics.mean_interval(list(b.values())), "difference": d, "test": test})


def compare(c: dict, sweeps: Sweeps) -> Finding:
    exp, sign, margin = c["experiment"], int(c.get("sign", 1)), float(c.get("margin", 0.0))
    ma, mb = c.get("a_metric", c.get("metric")), c.get("b_metric", c.get("metric"))  # one metric, or one per side
    metric = ma if ma == mb else f"{ma} vs {mb}"
    exp_b = c.get("b_experiment", exp)  # b from another sweep (e.g. a GAN's stage-1-only runs), paired by seed
    a, pa = _select(sweeps.jobs(exp), c["a"], exp, ma)
    b, pb = _select(sweeps.jobs(exp_b), c["b"], exp_b, mb)
    if pa or pb:
        return Finding("undecided", "; ".join(dict.fromkeys(pa + pb)))  # each problem once
    relative = bool(c.get("relative", False))  # the margin as a share of b's mean (e.g. 'within 10 % of b')
    return _difference_finding(c.get("a_label", _row_label(c["a"])), c.get("b_label", _row_label(c["b"])), metric,
                               a, b, sign, margin, relative, _effect(c))


def threshold(c: dict, sweeps: Sweeps) -> Finding:
    exp, metric, sign, value = c["experiment"], c["metric"], int(c.get("sign", 1)), float(c["value"])
    vals, problems = _select(sweeps.jobs(exp), c["row"], exp, metric)
    if problems:
        return Finding("undecided", "; ".join(problems))
    s = statistics.mean_interval(list(vals.values()))
    if s["lo"] is None:
        return Finding("undecided", f"fewer than 2 seeds in {_row_label(c['row'])}")
    claimed = f"claimed {'>' if sign > 0 else '<'} {_fmt(value)}"
    if s["std"] == 0:
        verdict, cell = "inconclusive", f"(zero spread: all {s['n']} seeds equal, no test)"
    else:
        verdict = _side(s["lo"] - value, s["hi"] - value, sign, 0.0)
        cell = f"[{_fmt(s['lo'])}, {_fmt(s['hi'])}] (n = {s['n']})"
    text = f"{metric} of {_row_label(c['row'])} = {_fmt(s['mean'])} {cell}; {claimed}"
    test = _test(sign * (s["mean"] - value), s["std"] / math.sqrt(s["n"]), s["n"] - 1, 0.0, _effect(c),
                 s["std"] == 0)
    return Finding(verdict, text, {"row": s, "test": test})


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
    # the test on Fisher's z scale (normal, se 1.06 / sqrt(n - 3)); the effect in z units beyond atanh(min_rho)
    clip = lambda r: math.atanh(max(-0.999999, min(0.999999, r)))  # noqa: E731
    eff = _effect(c)
    test = _test(clip(sign * s["rho"]), 1.06 / math.sqrt(s["n"] - 3), None, clip(min_rho),
                 None if eff is None else clip(min_rho + eff) - clip(min_rho))
    test["scale"] = "Fisher z"
    return Finding(verdict, text, {"spearman": s, "test": test})


def rank(c: dict, sweeps: Sweeps) -> Finding:
    """C0: the claim row non-inferior to every other row on one metric, and every row ranked (module docstring)."""
    metric, sign, margin = c["metric"], int(c.get("sign", -1)), float(c.get("margin", 0.0))
    relative = bool(c.get("relative", False))
    rows, problems = [], []
    for r in c["rows"]:
        label = r.get("label") or _row_label(r["row"])
        vals, p = _select(sweeps.jobs(r["experiment"]), r["row"], r["experiment"], metric)
        problems += p
        rows.append((label, vals))
    if problems:
        return Finding("undecided", "; ".join(dict.fromkeys(problems)))
    labels = [lab for lab, _ in rows]
    if c["claim"] not in labels:
        raise ConfigError(f"rank criterion: claim={c['claim']!r} is none of its rows' labels ({', '.join(labels)})")
    values = dict(rows)
    claim = values[c["claim"]]
    # non-inferiority of the claim row to each other row: sign * (claim - other) > -|margin| (x |mean other|)
    parts = [_difference_finding(c["claim"], lab, metric, claim, v, sign, -abs(margin), relative, _effect(c))
             for lab, v in rows if lab != c["claim"]]
    # the ranking: every row's interval, best by mean first, and which rows are non-inferior to that best
    stats = {lab: statistics.mean_interval(list(v.values())) for lab, v in rows}
    first = {lab: _first_job(sweeps, r["experiment"], r["row"]) for lab, r in zip(labels, c["rows"])}
    order = sorted(labels, key=lambda lab: -sign * stats[lab]["mean"])
    best = order[0]
    vs_best = {lab: _difference_finding(lab, best, metric, values[lab], values[best], sign, -abs(margin), relative,
                                        None) for lab in order[1:]}
    rejected = statistics.holm([f.numbers.get("test", {}).get("p_support") for f in vs_best.values()], ONE_SIDED)
    ranking = [{"label": lab, **stats[lab],
                "non_inferior_to_best": True if lab == best else bool(rejected[order[1:].index(lab)]),
                "vs_best": None if lab == best else vs_best[lab].numbers.get("difference"),
                "first_job": first[lab]} for lab in order]
    within = f"within {_fmt(abs(margin) * 100)} % of each" if relative else f"by less than {_fmt(abs(margin))}"
    text = (f"{metric}: {c['claim']} non-inferior to each of {len(parts)} other rows ({within}); "
            "ranking by mean (best first): " + ", ".join(f"{lab} {_fmt(stats[lab]['mean'])}" for lab in order))
    return Finding("inconclusive", text, {"ranking": ranking, "metric": metric, "claim": c["claim"]}, parts=parts)


def _first_job(sweeps: Sweeps, experiment: str, row: dict) -> Optional[str]:
    """`<experiment>/<job>` of the row's finished job with the lowest seed (the one whose samples a figure shows)."""
    ok = [r for r in sweeps.jobs(experiment) or [] if _match(r, row) and r["status"] == "ok"]
    ok.sort(key=lambda r: (r["seed"] is None, r["seed"] if r["seed"] is not None else 0, str(r["job"])))
    return f"{experiment}/{ok[0]['job']}" if ok else None


def _combine(parts: list[Finding]) -> str:
    verdicts = {p.verdict for p in parts}
    if "undecided" in verdicts:
        return "undecided"
    if "contradicted" in verdicts:
        return "contradicted"
    if verdicts == {"supported"}:
        return "supported"
    return "underpowered" if "underpowered" in verdicts else "inconclusive"


def all_of(c: dict, sweeps: Sweeps) -> Finding:
    parts = [decide(p, sweeps) for p in c["of"]]
    return Finding(_combine(parts), f"all of {len(parts)} criteria", parts=parts)


def _leaves(f: Finding) -> list[Finding]:
    return [f] if not f.parts else [x for p in f.parts for x in _leaves(p)]


def adjust(f: Finding, alpha: float = ONE_SIDED) -> Finding:
    """A claim's finding with Holm's rule over its leaves (module docstring), each leaf's minimum detectable
    effect at alpha / m in its text, the `underpowered` verdict where it applies, and the verdicts above the
    leaves recombined. A claim with one leaf keeps its interval verdict (Holm over one test is the test)."""
    leaves = [x for x in _leaves(f) if "test" in x.numbers]
    m = len(leaves)
    sup = statistics.holm([x.numbers["test"]["p_support"] for x in leaves], alpha)
    con = statistics.holm([x.numbers["test"]["p_contra"] for x in leaves], alpha)
    for x, s_ok, c_ok in zip(leaves, sup, con):
        t = x.numbers["test"]
        t["holm_m"], t["level"] = m, alpha / m
        t["mde"] = statistics.detectable_effect(t["se"], t["df"], alpha / m) if not t["zero_spread"] else None
        x.verdict = "supported" if s_ok else "contradicted" if c_ok else "inconclusive"
        underpowered = t["effect"] is not None and t["mde"] is not None and t["mde"] > t["effect"]
        if x.verdict == "inconclusive" and underpowered:
            x.verdict = "underpowered"
        z = " on Fisher's z" if t.get("scale") else ""
        x.text += (f"; MDE{z} {_fmt(t['mde'])} at level {alpha / m:.3g} (Holm, m = {m})"
                   + (f", declared effect {_fmt(t['effect'])}" if t["effect"] is not None else ""))
    def recombine(g: Finding) -> None:  # an all-of, or a rank (its claim row non-inferior to every other row)
        if g.parts:
            for p in g.parts:
                recombine(p)
            g.verdict = _combine(g.parts)
    recombine(f)
    return f


def decide(criterion: dict, sweeps: Sweeps) -> Finding:
    """Apply one criterion (see the module docstring) to the sweeps under `sweeps.root`, before multiplicity
    (`adjust` applies Holm over a claim's sub-tests)."""
    kind = criterion.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"claim criterion kind={kind!r}: choose one of {', '.join(KINDS)}")
    return {"compare": compare, "threshold": threshold, "trend": trend, "rank": rank,
            "all": all_of}[kind](criterion, sweeps)


def decide_claim(criterion: dict, sweeps: Sweeps) -> Finding:
    """One claim: its criterion decided, then Holm over its sub-tests and the power of each (`adjust`)."""
    return adjust(decide(criterion, sweeps))


def verdicts(cfg: dict, root: Path, sweeps: Optional[Sweeps] = None) -> dict[str, Finding]:
    """Every claim of a profile config (`claims: {C1: {statement, criterion, ...}}`) decided on `root`'s sweeps."""
    claims = cfg.get("claims") or {}
    if not claims:
        raise ConfigError("the claims profile lists no claims (conf/claims/<profile>.yaml: claims: {C1: ...})")
    rule = cfg.get("multiplicity")  # not stated: the engine's only rule, Holm
    if rule not in (None, "holm"):
        raise ConfigError(f"claims.multiplicity={rule!r}: the engine applies Holm across each claim's sub-tests "
                          "(multiplicity: holm)")
    sweeps = sweeps or Sweeps(root)
    return {name: decide_claim(c["criterion"], sweeps) for name, c in claims.items()}


def controls(cfg: dict, root: Path, sweeps: Optional[Sweeps] = None) -> dict[str, Finding]:
    """The profile's negative controls (`controls: {name: {claim, text, criterion}}`): each applies one claim's
    criterion where that claim is false by construction (an untrained encoder, a row without the KL term), with the
    same Holm and power rules. A control that comes out `supported` shows that the criterion decides nothing."""
    claims, experiments = cfg.get("claims") or {}, cfg.get("experiments")
    sweeps, out = sweeps or Sweeps(root), {}
    for name, c in (cfg.get("controls") or {}).items():
        if c.get("claim") not in claims:
            raise ConfigError(f"claims.controls.{name}.claim={c.get('claim')!r}: name one of the profile's claims "
                              f"({', '.join(claims)})")
        missing = [e for e in experiments_of(c["criterion"]) if experiments is not None and e not in experiments]
        if missing:
            raise ConfigError(f"claims.controls.{name} reads experiment(s) {', '.join(missing)}, which the profile "
                              "does not run: add them under claims.experiments")
        out[name] = decide_claim(c["criterion"], sweeps)
    return out


def control_outcome(f: Finding) -> str:
    """What a negative control's verdict says about its criterion."""
    if f.verdict == "undecided":
        return "undecided (runs missing)"
    return "PASSES: the criterion decides nothing" if f.verdict == "supported" else "fails, as it must"


def experiments_of(criterion: dict) -> list[str]:
    """The sweeps a criterion reads (its `experiment`, `b_experiment`, and those of its parts), in order."""
    return list(dict.fromkeys(e for e, _, _, _ in reads_of(criterion)))


def metrics_of(criterion: dict, experiment: str) -> list[str]:
    """The metrics a criterion reads from one experiment (the columns its table must show)."""
    return list(dict.fromkeys(m for e, _, m, _ in reads_of(criterion) if e == experiment))


def reads_of(criterion: dict) -> list[tuple[str, dict, str, str]]:
    """(experiment, row, metric, label) of every row a criterion reads, in the criterion's order, each once."""
    out: list[tuple[str, dict, str, str]] = []

    def add(exp: str, row: dict, metric: str, label: str = "") -> None:
        item = (exp, dict(row), metric, label or ",".join(f"{k}={v}" for k, v in row.items()))
        if all((e, r, m) != (item[0], item[1], item[2]) for e, r, m, _ in out):
            out.append(item)

    def walk(c: dict) -> None:
        kind = c.get("kind")
        if kind == "all":
            for p in c["of"]:
                walk(p)
        elif kind == "compare":
            add(c["experiment"], c["a"], c.get("a_metric", c.get("metric")), c.get("a_label", ""))
            add(c.get("b_experiment", c["experiment"]), c["b"], c.get("b_metric", c.get("metric")),
                c.get("b_label", ""))
        elif kind in ("threshold", "trend"):
            add(c["experiment"], c.get("row", {}), c["metric"])
        elif kind == "rank":
            for r in c["rows"]:
                add(r["experiment"], r["row"], c["metric"], r.get("label", ""))

    walk(criterion)
    return out
