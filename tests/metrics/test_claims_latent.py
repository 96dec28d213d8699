"""Latent metrics behind C1-C3 against closed forms: aggregate-posterior KL, rate, decoder smoothness, path length."""

from __future__ import annotations

import math

import pytest
import torch

from ldm.metrics.latent import aggregate_posterior_kl, decoder_smoothness, path_length_ratio, rate


@pytest.mark.parametrize("total_var,expected", [(1.0, 0.0), (4.0, 2 / 2 * (4 - 1 - math.log(4)))])
def test_aggregate_posterior_kl_matches_closed_form(total_var, expected):
    """Posteriors N(mu_i, 0.3^2 I) with mu_i ~ N(0, (v - 0.09) I): the aggregate posterior is N(0, v I), whose KL to
    N(0, I) in d = 2 is d/2 (v - 1 - ln v): 0 for v = 1, 1.614 for v = 4."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    x = (x - x.mean(0)) @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(x.T))).T  # exactly mean 0, covariance I
    mu = x * math.sqrt(total_var - 0.09)
    out = aggregate_posterior_kl(mu, torch.full_like(mu, 0.3), samples=2000, seed=1)
    assert out["agg_kl_gauss"] == pytest.approx(expected, abs=1e-6)  # moments exact by construction
    assert out["agg_kl"] == pytest.approx(expected, abs=0.08)  # Monte Carlo over the 1000-component mixture
    det = aggregate_posterior_kl(x * math.sqrt(total_var), None)  # deterministic codes: moments only
    assert "agg_kl" not in det and det["agg_kl_gauss"] == pytest.approx(expected, abs=1e-6)


def test_rate_in_bits():
    mu, std = torch.zeros(5, 3), torch.ones(5, 3)
    assert rate(mu, std) == pytest.approx(0.0)
    assert rate(torch.ones(4, 1), torch.ones(4, 1)) == pytest.approx(0.5 / math.log(2))  # KL = 1/2 nat
    assert rate(mu, None) is None


def test_linear_decoder_smoothness_is_bounded_by_its_singular_values():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(12, 4, generator=g, dtype=torch.float64)
    decode = lambda z: z.flatten(1) @ a.T  # noqa: E731
    out = decoder_smoothness(decode, torch.randn(256, 4, generator=g, dtype=torch.float64), directions=8)
    sv = torch.linalg.svdvals(a)
    assert sv[-1] <= out["smoothness"] <= out["smoothness_p90"] <= sv[0]
    # E ||A u||^2 = ||A||_F^2 / d for a random unit u: the mean ratio sits just below its square root
    assert out["smoothness"] == pytest.approx(float(a.norm() / 2), rel=0.1)
    assert out["smoothness_spread"] >= 1


def test_path_length_ratio_straight_and_curved():
    t = torch.linspace(0, 1, 17, dtype=torch.float64)
    line = torch.stack([torch.stack([t, 2 * t], -1)])  # (1, K + 1, 2): a straight path
    assert path_length_ratio(line) == pytest.approx(1.0)
    theta = math.pi * t  # half a circle in K = 16 chords: K sin(pi / 2K) / sin(pi / 2)
    arc = torch.stack([torch.stack([theta.cos(), theta.sin()], -1)])
    assert path_length_ratio(arc) == pytest.approx(16 * math.sin(math.pi / 32))
