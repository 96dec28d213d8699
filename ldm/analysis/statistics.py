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


def _degenerate(diff: float) -> tuple[float, float, float]:
    """(p, lo, hi) when the difference has no spread at all: certain, whatever it is."""
    return (1.0 if diff == 0 else 0.0), diff, diff


def difference(a: dict, b: dict, level: float = LEVEL) -> Optional[dict]:
    """Mean of row `a` minus mean of row `b`, given as {seed: value}; None when either has < 2 values.

    Paired t on the per-seed differences when both rows hold exactly the same seeds (the seed fixes the data
    order and initialisation, so runs that share it are paired); Welch's t on the two sets otherwise.
    Returns diff, lo, hi (the interval on the difference), p (two-sided) and the test's name."""
    a = {k: v for k, v in a.items() if numbers([v])}
    b = {k: v for k, v in b.items() if numbers([v])}
    if len(a) < 2 or len(b) < 2:
        return None
    q = 0.5 + level / 2
    if set(a) == set(b):
        d = [float(a[k]) - float(b[k]) for k in sorted(a)]
        n, diff = len(d), statistics.fmean(d)
        se = statistics.stdev(d) / math.sqrt(n)
        if se == 0:
            p, lo, hi = _degenerate(diff)
        else:
            tval = diff / se
            p = 2 * _st.t.sf(abs(tval), n - 1)
            half = _st.t.ppf(q, n - 1) * se
            lo, hi = diff - half, diff + half
        return {"diff": diff, "lo": lo, "hi": hi, "p": float(p), "test": "paired t", "n": n}
    xa, xb = numbers(a.values()), numbers(b.values())
    va, vb = statistics.variance(xa) / len(xa), statistics.variance(xb) / len(xb)
    diff = statistics.fmean(xa) - statistics.fmean(xb)
    se = math.sqrt(va + vb)
    if se == 0:
        p, lo, hi = _degenerate(diff)
    else:
        df = (va + vb) ** 2 / ((va ** 2 / (len(xa) - 1) if va else 0) + (vb ** 2 / (len(xb) - 1) if vb else 0))
        p = 2 * _st.t.sf(abs(diff / se), df)
        half = _st.t.ppf(q, df) * se
        lo, hi = diff - half, diff + half
    return {"diff": diff, "lo": lo, "hi": hi, "p": float(p), "test": "Welch t", "n": min(len(xa), len(xb))}
