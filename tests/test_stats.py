"""ldm.analysis.statistics: intervals and tests against scipy's own implementations and a coverage simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from ldm.analysis import statistics


def test_mean_interval_known_answer_and_small_n():
    s = statistics.mean_interval([30, 32, 34, None, float("nan")])
    assert s["n"] == 3 and s["mean"] == 32 and s["std"] == 2
    half = st.t.ppf(0.975, 2) * 2 / math.sqrt(3)
    assert s["lo"] == pytest.approx(32 - half) and s["hi"] == pytest.approx(32 + half)
    assert half == pytest.approx(4.968, 1e-3)
    assert statistics.mean_interval([7.0]) == {"n": 1, "mean": 7.0, "std": None, "lo": None, "hi": None}
    assert statistics.mean_interval([])["mean"] is None


def test_t_interval_covers_the_true_mean_at_the_nominal_rate():
    rng = np.random.default_rng(0)
    trials, hits = 2000, 0
    for x in rng.normal(3.0, 2.0, size=(trials, 5)):
        s = statistics.mean_interval(x.tolist())
        hits += s["lo"] <= 3.0 <= s["hi"]
    assert 0.935 <= hits / trials <= 0.965  # binomial sd at 2000 trials: 0.0049


def test_difference_matches_scipy_paired_and_welch():
    a, b = {0: 10.0, 1: 12.0, 2: 14.0, 3: 16.0}, {0: 10.3, 1: 12.3, 2: 14.4, 3: 16.2}
    d = statistics.difference(a, b)  # same seeds: paired
    ref = st.ttest_rel(list(a.values()), list(b.values()))
    assert d["test"] == "paired t" and d["p"] == pytest.approx(ref.pvalue) and d["diff"] == pytest.approx(-0.3)
    assert d["lo"] < d["diff"] < d["hi"] < 0  # a consistent per-seed gap: the interval excludes 0
    b2 = {10 + k: v for k, v in b.items()}  # other seeds: Welch, and the same gap is now within the spread
    w = statistics.difference(a, b2)
    ref = st.ttest_ind(list(a.values()), list(b2.values()), equal_var=False)
    assert w["test"] == "Welch t" and w["p"] == pytest.approx(ref.pvalue) and w["p"] > 0.5
    assert w["lo"] < 0 < w["hi"]
    assert statistics.difference({0: 1.0}, {0: 2.0, 1: 3.0}) is None  # one seed: no interval
    same = statistics.difference({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0})
    assert same["p"] == 1.0 and same["lo"] == same["hi"] == 0.0  # no spread, no difference
    apart = statistics.difference({0: 1.0, 1: 1.0}, {2: 3.0, 3: 3.0})
    assert apart["p"] == 0.0 and apart["diff"] == -2.0
