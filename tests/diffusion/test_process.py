"""Gaussian diffusion process: schedules, q_sample statistics, parameterisation identities, loss."""

from __future__ import annotations

import pytest
import torch

from ldm.diffusion import schedules
from ldm.diffusion.process import GaussianDiffusion
from ldm.errors import ConfigError

SCHEDULES = [schedules.linear, schedules.scaled_linear, schedules.cosine]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_alpha_bar_strictly_decreasing_in_unit_interval(schedule):
    ac = GaussianDiffusion(schedule(1000)).alphas_cumprod
    assert len(ac) == 1000
    assert ((ac > 0) & (ac < 1)).all()
    assert (ac[1:] < ac[:-1]).all()


def test_scaled_linear_endpoints():
    b = schedules.scaled_linear(1000, 0.00085, 0.012)
    assert b[0].item() == pytest.approx(0.00085) and b[-1].item() == pytest.approx(0.012)


@pytest.mark.parametrize("t", [10, 500, 990])
def test_q_sample_moments(t):
    proc = GaussianDiffusion(schedules.linear(1000))
    x0 = torch.tensor([1.5, -0.5]).view(1, 2, 1, 1).expand(200_000, 2, 1, 1)
    tt = torch.full((len(x0),), t)
    torch.manual_seed(0)
    xt = proc.q_sample(x0, tt)
    ac = proc.alphas_cumprod[t].item()
    assert torch.allclose(xt.mean(0).flatten(), (ac ** 0.5) * x0[0].flatten(), atol=0.01)
    assert torch.allclose(xt.var(0).flatten(), torch.full((2,), 1 - ac), atol=0.01)


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
def test_conversions_round_trip(param):
    proc = GaussianDiffusion(schedules.cosine(1000), parameterization=param)
    x0, eps = torch.randn(8, 2, 4, 4, dtype=torch.float64), torch.randn(8, 2, 4, 4, dtype=torch.float64)
    t = torch.randint(0, 1000, (8,))
    xt = proc.q_sample(x0, t, eps)
    out = proc.from_x0_eps(x0, eps, t)
    x0_hat, eps_hat = proc.to_x0_eps(out, xt, t)
    assert torch.allclose(x0_hat, x0, atol=1e-9) and torch.allclose(eps_hat, eps, atol=1e-9)


@pytest.mark.parametrize("param", ["eps", "x0", "v"])
@pytest.mark.parametrize("gamma", [None, 5.0])
def test_oracle_network_has_zero_loss(param, gamma):
    """A network that knows the noise (hence x0 and v) gives exactly zero loss."""
    proc = GaussianDiffusion(schedules.scaled_linear(1000), parameterization=param, min_snr_gamma=gamma)
    x0, noise = torch.randn(16, 2, 4, 4, dtype=torch.float64), torch.randn(16, 2, 4, 4, dtype=torch.float64)
    t = torch.randint(0, 1000, (16,))
    oracle = lambda xt, tt: proc.target(x0, noise, tt)  # noqa: E731
    assert proc.loss(oracle, x0, t=t, noise=noise).item() == pytest.approx(0.0, abs=1e-20)
    wrong = lambda xt, tt: proc.target(x0, noise, tt) + 1  # noqa: E731
    assert proc.loss(wrong, x0, t=t, noise=noise).item() > 0


def test_min_snr_weights_are_equivalent_across_parameterizations():
    """min-SNR weights the same x0-error equally whichever quantity the network predicts."""
    t = torch.arange(0, 1000, 50)
    like = torch.zeros(len(t), 1, dtype=torch.float64)
    w = {p: GaussianDiffusion(schedules.linear(1000), p, 5.0).loss_weight(t, like) for p in ("eps", "x0", "v")}
    snr = (lambda ac: ac / (1 - ac))(GaussianDiffusion(schedules.linear(1000)).alphas_cumprod[t])
    # MSE_eps = snr * MSE_x0, MSE_v = (snr + 1) * MSE_x0: weighted losses agree for the same x0 error
    assert torch.allclose(w["eps"] * snr, w["x0"]) and torch.allclose(w["v"] * (snr + 1), w["x0"])
    assert torch.allclose(w["x0"], snr.clamp(max=5.0))


def test_bad_parameterization():
    with pytest.raises(ConfigError, match="eps, x0, v"):
        GaussianDiffusion(schedules.linear(10), parameterization="score")
