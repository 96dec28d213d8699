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


def test_difference_known_answers():
    """By hand: per-seed differences 1, 2, 3 -> mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3) on 2 df, two-sided
    p = 0.0742, half-width t(0.975, 2) = 4.3027 times se = 2.4841. Welch on {1, 2, 3} vs {0, 0, 2}: se^2 = 1/3 +
    4/9 = 7/9, df = (7/9)^2 / ((1/3)^2/2 + (4/9)^2/2) = 3.92, t = (4/3) / sqrt(7/9) = 1.5119."""
    d = statistics.difference({0: 1.0, 1: 2.0, 2: 3.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert d["p"] == pytest.approx(0.07418, abs=5e-5) and d["se"] == pytest.approx(3 ** -0.5)
    assert (d["lo"], d["hi"]) == (pytest.approx(2 - 2.48414, abs=5e-5), pytest.approx(2 + 2.48414, abs=5e-5))
    w = statistics.difference({0: 1.0, 1: 2.0, 2: 3.0}, {5: 0.0, 6: 0.0, 7: 2.0})
    assert w["test"] == "Welch t" and w["df"] == pytest.approx(3.92) and w["se"] == pytest.approx((7 / 9) ** 0.5)
    assert w["p"] == pytest.approx(2 * st.t.sf((4 / 3) / (7 / 9) ** 0.5, 3.92))


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
    # zero spread: no test at all (p None, flagged), not a certain p = 0 with a zero-width interval
    same = statistics.difference({0: 1.0, 1: 1.0}, {0: 1.0, 1: 1.0})
    assert same["p"] is None and same["zero_spread"] and same["lo"] == same["hi"] == 0.0
    apart = statistics.difference({0: 1.0, 1: 1.0}, {2: 3.0, 3: 3.0})
    assert apart["p"] is None and apart["zero_spread"] and apart["diff"] == -2.0


def test_one_sided_p_agrees_with_the_interval_and_holm_steps_down():
    """p_support < 0.025 exactly when the 95 % interval clears the threshold (the verdict rules agree), and Holm's
    rule on known p-values: all three pass at 0.025 / 3, 0.025 / 2, 0.025; one failure stops the steps."""
    a, b = {0: 1.0, 1: 1.4, 2: 0.7}, {0: 2.0, 1: 2.1, 2: 2.3}
    d = statistics.difference(a, b)
    for bound in (-2.0, -1.5, -1.0, -0.5, 0.0):
        p = statistics.one_sided_p(-d["diff"], d["se"], d["df"], -bound)  # claim: a - b < bound
        assert (p < 0.025) == (d["hi"] < bound)
    assert statistics.one_sided_p(1.0, 0.0, 2, 0.0) is None
    assert statistics.holm([0.008, 0.012, 0.024]) == [True, True, True]
    assert statistics.holm([0.001, 0.013, 0.02]) == [True, False, False]  # 0.013 > 0.025 / 2 stops the steps
    assert statistics.holm([0.02]) == [True] and statistics.holm([0.03]) == [False]
    assert statistics.holm([None, 0.001]) == [False, True]  # no test (zero spread) is never rejected, counts in m
    assert statistics.holm([None, 0.02]) == [False, False]  # ... so 0.02 must clear 0.025 / 2


def test_minimum_detectable_effect_matches_the_audit_and_simulation():
    """In sd units of a paired difference: 3.26 at n = 3, 1.68 at n = 5 (the audit's numbers); and a simulated
    one-sided t test at that effect rejects ~80 % of the time."""
    assert statistics.detectable_effect(1 / math.sqrt(3), 2) == pytest.approx(3.26, abs=0.01)
    assert statistics.detectable_effect(1 / math.sqrt(5), 4) == pytest.approx(1.68, abs=0.01)
    assert statistics.detectable_effect(0.0, 4) is None
    rng = np.random.default_rng(0)
    n, eff = 5, statistics.detectable_effect(1 / math.sqrt(5), 4)
    x = rng.normal(eff, 1.0, size=(20000, n))
    t = x.mean(1) / (x.std(1, ddof=1) / math.sqrt(n))
    assert (t > st.t.ppf(0.975, n - 1)).mean() == pytest.approx(0.8, abs=0.015)
