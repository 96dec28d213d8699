"""Small-sample statistics for the tables: Student-t intervals over seeds, and the difference between two rows
with its interval and p-value (paired t when both rows ran the same seeds, Welch's t otherwise).

Why t and not the bootstrap: a row has 3-5 seeds, and a bootstrap of 3-5 values cannot reach the tails (with 3
values there are 10 distinct resamples), so its "95 %" interval is far too narrow; the t interval is exact for
normal seed-to-seed noise and tests/test_stats.py checks its coverage in simulation.
"""

from __future__ import annotations

import math
import statistics
from typing import Optional, Sequence

from scipy import stats as _st
from scipy.optimize import brentq

LEVEL = 0.95  # every interval in the tables
ALPHA = 1 - LEVEL  # a difference "counts" (best marks) when its interval excludes 0, i.e. p < ALPHA


def numbers(values: Sequence) -> list[float]:
    """The finite numbers among `values` (None, NaN, inf and non-numbers dropped)."""
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]


def mean_interval(values: Sequence, level: float = LEVEL) -> dict:
    """Mean, sample std and the two-sided Student-t interval of the mean; lo/hi/std are None below 2 values."""
    x = numbers(values)
    n = len(x)
    if not n:
        return {"n": 0, "mean": None, "std": None, "lo": None, "hi": None}
    mean = statistics.fmean(x)
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "lo": None, "hi": None}
    std = statistics.stdev(x)
    half = _st.t.ppf(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "lo": mean - half, "hi": mean + half}


def _degenerate(diff: float) -> tuple[None, float, float]:
    """(p, lo, hi) when the difference has no spread at all (every seed gave the same value, e.g. a saturated
    count): no test is possible, so p is None (not 0) and the 'interval' is the point; callers say 'zero spread'."""
    return None, diff, diff


def difference(a: dict, b: dict, level: float = LEVEL) -> Optional[dict]:
    """Mean of row `a` minus mean of row `b`, given as {seed: value}; None when either has < 2 values.

    Paired t on the per-seed differences when both rows hold exactly the same seeds (the seed fixes the data
    order and initialisation, so runs that share it are paired); Welch's t on the two sets otherwise.
    Returns diff, lo, hi (the interval on the difference), p (two-sided; None with zero spread), se and df (for
    one-sided tests and power), zero_spread, and the test's name."""
    a = {k: v for k, v in a.items() if numbers([v])}
    b = {k: v for k, v in b.items() if numbers([v])}
    if len(a) < 2 or len(b) < 2:
        return None
    if set(a) == set(b):
        xa, xb = [float(a[k]) for k in sorted(a)], [float(b[k]) for k in sorted(a)]
        d = [u - v for u, v in zip(xa, xb)]
        n, diff = len(d), statistics.fmean(d)
        se = statistics.stdev(d) / math.sqrt(n)
        p, lo, hi = _degenerate(diff) if se == 0 else _scipy(_st.ttest_rel(xa, xb), level)
        return {"diff": diff, "lo": lo, "hi": hi, "p": p, "test": "paired t", "n": n, "se": se, "df": n - 1,
                "zero_spread": se == 0}
    xa, xb = numbers(a.values()), numbers(b.values())
    va, vb = statistics.variance(xa) / len(xa), statistics.variance(xb) / len(xb)
    diff = statistics.fmean(xa) - statistics.fmean(xb)
    se = math.sqrt(va + vb)
    df = None
    if se == 0:
        p, lo, hi = _degenerate(diff)
    else:
        res = _st.ttest_ind(xa, xb, equal_var=False)
        df = float(res.df)  # Welch-Satterthwaite
        p, lo, hi = _scipy(res, level)
    return {"diff": diff, "lo": lo, "hi": hi, "p": p, "test": "Welch t", "n": min(len(xa), len(xb)), "se": se,
            "df": df, "zero_spread": se == 0}


def _scipy(res, level: float) -> tuple[float, float, float]:
    """(two-sided p, lo, hi) of a scipy t-test result at `level`."""
    ci = res.confidence_interval(confidence_level=level)
    return float(res.pvalue), float(ci.low), float(ci.high)


def one_sided_p(estimate: float, se: float, df: Optional[float], bound: float) -> Optional[float]:
    """p of the one-sided test H0: effect <= bound against H1: effect > bound, for an estimate with standard error
    `se` (Student t with `df` degrees of freedom; the normal where df is None). None with zero spread. With
    bound = the claim's threshold, p < ALPHA / 2 is the same event as the 95 % two-sided interval lying wholly
    above it, so a verdict read off the interval and one read off this p agree."""
    if not se:
        return None
    t = (estimate - bound) / se
    return float(_st.t.sf(t, df) if df else _st.norm.sf(t))


def holm(pvalues: Sequence[Optional[float]], alpha: float = ALPHA / 2) -> list[bool]:
    """Holm's step-down rule (Holm, 1979) over m tests: sort the p-values, reject the i-th smallest (i = 1..m)
    while p_(i) <= alpha / (m - i + 1), stop at the first that is not. Controls the chance of any false rejection
    at `alpha` whatever the dependence between the tests. A None p (zero spread: no test) is never rejected and
    counts in m. The default alpha is one-sided 0.025, the level of the 95 % two-sided intervals."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: (pvalues[i] is None, pvalues[i] if pvalues[i] is not None else 0.0))
    out = [False] * m
    for rank, i in enumerate(order):
        p = pvalues[i]
        if p is None or p > alpha / (m - rank):
            break
        out[i] = True
    return out


def detectable_effect(se: float, df: Optional[float], alpha: float = ALPHA / 2, power: float = 0.8) -> Optional[float]:
    """The minimum detectable effect: the true effect beyond a claim's threshold that a one-sided level-`alpha`
    t test with this standard error and these degrees of freedom detects with probability `power` (exact, with
    the noncentral t; the normal where df is None). In units of the standard deviation of a paired difference,
    n = 3 seeds gives 3.26 and n = 5 gives 1.68 (se = sd / sqrt(n), df = n - 1). None with zero spread."""
    if not se:
        return None
    if not df:
        return float((_st.norm.ppf(1 - alpha) + _st.norm.ppf(power)) * se)
    crit = _st.t.ppf(1 - alpha, df)
    delta = brentq(lambda nc: _st.nct.sf(crit, df, nc) - power, 0.0, 100.0)
    return float(delta * se)
