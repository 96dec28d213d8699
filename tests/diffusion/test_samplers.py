"""Samplers against an analytic denoiser for a Gaussian toy distribution; determinism; CFG."""

from __future__ import annotations

import pytest
import torch

from ldm.diffusion import schedules
from ldm.diffusion.process import GaussianDiffusion
from ldm.diffusion.samplers import (CountingDenoiser, guided, sample_ddim, sample_ddpm, sample_dpmpp_2m,
                                    timesteps)

MU, SIGMA = 1.5, 0.5


def gaussian_denoiser(proc: GaussianDiffusion):
    """Exact eps-prediction when the data is N(MU, SIGMA^2) per element: E[eps | x_t]."""

    def denoise(x, t):
        ac = proc.alpha_bar(t, x)
        var = ac * SIGMA ** 2 + (1 - ac)
        return (1 - ac).sqrt() * (x - ac.sqrt() * MU) / var

    return denoise


@pytest.mark.parametrize("sampler,kw", [(sample_ddim, {"steps": 50}), (sample_ddim, {"steps": 100, "eta": 1.0}),
                                        (sample_ddpm, {"steps": 1000}), (sample_dpmpp_2m, {"steps": 20})])
def test_perfect_denoiser_recovers_toy_distribution(sampler, kw):
    proc = GaussianDiffusion(schedules.linear(1000))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 1, 1, 1, generator=g, dtype=torch.float64)
    out = sampler(gaussian_denoiser(proc), proc, x, generator=g, **kw)
    assert out.mean().item() == pytest.approx(MU, abs=0.03)
    assert out.std().item() == pytest.approx(SIGMA, abs=0.03)


def test_ddim_eta0_is_deterministic_given_noise():
    proc = GaussianDiffusion(schedules.scaled_linear(1000))
    net = torch.nn.Conv2d(2, 2, 1)
    model = lambda x, t: net(x) * 0.1  # noqa: E731
    x = torch.randn(4, 2, 4, 4)
    a = sample_ddim(model, proc, x.clone(), steps=10, generator=torch.Generator().manual_seed(1))
    b = sample_ddim(model, proc, x.clone(), steps=10, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = sample_ddim(model, proc, x.clone(), steps=10, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, c)


def test_timesteps_and_nfe():
    assert timesteps(1000, 1) == [999]
    ts = timesteps(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))
    proc = GaussianDiffusion(schedules.linear(1000))
    counter = CountingDenoiser(gaussian_denoiser(proc))
    sample_ddim(counter, proc, torch.randn(2, 1, 1, 1), steps=25)
    assert counter.nfe == 25
    with pytest.raises(ValueError):
        timesteps(1000, 0)


def test_cfg_scale_one_equals_conditional_and_scale_mixes():
    calls = []

    def model(x, t, y=None):
        calls.append(None if y is None else y.tolist())
        return x * 0 + (y.view(-1, 1, 1, 1).float() if y is not None else 0.0)

    x, t, y = torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long), torch.tensor([1, 2, 3])
    assert torch.equal(guided(model, y, 1.0, null_label=10)(x, t), model(x, t, y=y))
    out = guided(model, y, 3.0, null_label=10)(x, t)
    # uncond predicts the null label (10): 10 + 3 * (y - 10)
    assert torch.allclose(out[:, 0, 0, 0], 10 + 3.0 * (y.float() - 10))
