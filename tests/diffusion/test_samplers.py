"""Samplers against an analytic denoiser for a Gaussian toy distribution; determinism; CFG."""

from __future__ import annotations

import pytest
import torch

from ldm.diffusion import schedules
from ldm.diffusion.process import GaussianDiffusion
from ldm.diffusion.samplers import CountingDenoiser, guided, sample_ddim, sample_ddpm, sample_dpmpp_2m
from ldm.diffusion.spacing import even, trailing
from ldm.errors import ConfigError

MU, SIGMA = 1.5, 0.5


def gaussian_denoiser(proc: GaussianDiffusion):
    """Exact eps-prediction when the data is N(MU, SIGMA^2) per element: E[eps | x_t]."""

    def denoise(x, t):
        ac = proc.alpha_bar(t, x)
        var = ac * SIGMA ** 2 + (1 - ac)
        return (1 - ac).sqrt() * (x - ac.sqrt() * MU) / var

    return denoise


@pytest.mark.parametrize("sampler,kw", [(sample_ddim, {"steps": 50, "eta": 0.0}),
                                        (sample_ddim, {"steps": 100, "eta": 1.0}),
                                        (sample_ddim, {"steps": 50, "eta": 0.0, "spacing": trailing}),
                                        pytest.param(sample_ddpm, {"steps": 1000}, marks=pytest.mark.slow),
                                        (sample_dpmpp_2m, {"steps": 20})])
def test_perfect_denoiser_recovers_toy_distribution(sampler, kw):
    proc = GaussianDiffusion(schedules.linear(1000))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20_000, 1, 1, 1, generator=g, dtype=torch.float64)
    out = sampler(gaussian_denoiser(proc), proc, x, generator=g, **{"spacing": even, **kw})
    assert out.mean().item() == pytest.approx(MU, abs=0.03)
    assert out.std().item() == pytest.approx(SIGMA, abs=0.03)


def test_ddim_eta0_is_deterministic_given_noise():
    proc = GaussianDiffusion(schedules.scaled_linear(1000))
    net = torch.nn.Conv2d(2, 2, 1)
    model = lambda x, t: net(x) * 0.1  # noqa: E731
    x = torch.randn(4, 2, 4, 4)
    a = sample_ddim(model, proc, x.clone(), steps=10, spacing=even, eta=0.0, generator=torch.Generator().manual_seed(1))
    b = sample_ddim(model, proc, x.clone(), steps=10, spacing=even, eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = sample_ddim(model, proc, x.clone(), steps=10, spacing=even, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, c)


def test_spacings_known_answers():
    assert even(1000, 1) == [999] and even(10, 10) == list(range(9, -1, -1))
    ts = even(1000, 50)
    assert len(ts) == 50 and ts[0] == 999 and ts[-1] == 0 and all(a > b for a, b in zip(ts, ts[1:]))
    # trailing (Lin et al., 2024, table 2): T=1000, 10 steps -> 999, 899, ..., 99
    assert trailing(1000, 10) == [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]
    for bad in (0, 1001, 2.5):
        with pytest.raises(ConfigError, match=f"sampler.steps={bad} must be an integer in"):
            even(1000, bad)


def test_nfe_and_the_callback_see_every_step():
    proc = GaussianDiffusion(schedules.linear(1000))
    counter = CountingDenoiser(gaussian_denoiser(proc))
    seen = []
    out = sample_ddim(counter, proc, torch.randn(2, 1, 1, 1), steps=25, spacing=even, eta=0.0, callback=seen.append)
    assert counter.nfe == 25 and [s["i"] for s in seen] == list(range(25))
    assert [s["t"] for s in seen] == even(1000, 25)
    assert seen[0]["x"].shape == seen[-1]["denoised"].shape == out.shape
    # DDIM's last step lands on the last x0 prediction
    assert torch.allclose(out, seen[-1]["denoised"])


def test_a_new_spacing_is_one_function():
    """Any `spacing(num_timesteps, steps)` plugs into every sampler, e.g. quadratic (more steps near t=0)."""
    def quadratic(num_timesteps, steps):
        return sorted({round((num_timesteps - 1) * (i / (steps - 1)) ** 2) for i in range(steps)}, reverse=True)

    proc = GaussianDiffusion(schedules.linear(1000))
    seen = []
    sample_dpmpp_2m(gaussian_denoiser(proc), proc, torch.randn(2, 1, 1, 1), steps=10, spacing=quadratic,
                    callback=seen.append)
    assert [s["t"] for s in seen] == quadratic(1000, 10)


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


def test_a_sampler_config_from_before_spacings_samples_evenly():
    """Checkpoints written before samplers took a spacing saved `{_target_, steps, eta}`: they sample as they did."""
    from ldm.diffusion.samplers import upgrade
    from ldm.utils.config import build

    old = {"_target_": "ldm.diffusion.samplers.sample_ddim", "_partial_": True, "steps": 10, "eta": 0.0}
    proc = GaussianDiffusion(schedules.linear(1000))
    seen = []
    build(upgrade(old))(gaussian_denoiser(proc), proc, torch.randn(2, 1, 1, 1), callback=seen.append)
    assert [s["t"] for s in seen] == even(1000, 10)
    assert upgrade({**old, "spacing": "kept"})["spacing"] == "kept" and upgrade(None) is None


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v"])
def test_clipped_denoiser_bounds_x0_and_stays_consistent(parameterization):
    """x0 clipping (pixel DDPM): the clamped x0 and the recomputed eps still explain x_t, in-range predictions
    pass unchanged, and every sampler's output lands inside the bounds (the last step returns x0)."""
    from ldm.diffusion.samplers import clipped

    proc = GaussianDiffusion(schedules.linear(1000), parameterization)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(64, 1, 2, 2, generator=g, dtype=torch.float64), torch.randint(0, 1000, (64,), generator=g)
    lo, hi = torch.tensor(-1.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    wild = lambda x, t: 3 * torch.randn(x.shape, generator=g, dtype=x.dtype)  # noqa: E731
    out = clipped(wild, proc, lo, hi)(x, t)
    x0, eps = proc.to_x0_eps(out, x, t)
    assert x0.abs().max() <= 1 + 1e-9 and (x0.abs() > 0.999).any()  # clamped, and clamping happened
    a = proc.alpha_bar(t, x)
    assert torch.allclose(a.sqrt() * x0 + (1 - a).sqrt() * eps, x, atol=1e-8)
    x0_in, eps_in = x.clamp(-0.5, 0.5), torch.randn(x.shape, generator=g, dtype=x.dtype)  # x0 inside the bounds
    x_t = a.sqrt() * x0_in + (1 - a).sqrt() * eps_in
    tame = proc.from_x0_eps(x0_in, eps_in, t)
    got = clipped(lambda x_, t_: tame, proc, lo, hi)(x_t, t)
    assert torch.allclose(got, tame, atol=1e-8)  # passes unchanged
    for sampler, kw in ((sample_ddim, {"steps": 10, "eta": 0.0}), (sample_ddpm, {"steps": 10}),
                        (sample_dpmpp_2m, {"steps": 10})):
        z = sampler(clipped(wild, proc, lo, hi), proc, torch.randn(32, 1, 2, 2, generator=g, dtype=torch.float64),
                    generator=g, spacing=even, **kw)
        assert z.abs().max() <= 1 + 1e-6, sampler.__name__
        unclipped = sampler(wild, proc, torch.randn(32, 1, 2, 2, generator=g, dtype=torch.float64), generator=g,
                            spacing=even, **kw)
        assert unclipped.abs().max() > 1.5, sampler.__name__  # without the clip the same denoiser leaves the range


def test_noise_is_drawn_where_the_generator_lives_and_the_cpu_stream_is_unchanged():
    """`noise_like` with a CPU generator is exactly the stream the samplers drew before (torch.randn on the CPU,
    then moved); `noise_generator` is a CPU generator unless given a device; DDPM's noise comes from it."""
    from ldm.diffusion.samplers import noise_generator, noise_like

    x = torch.zeros(3, 2, 4, 4, dtype=torch.float64)
    g = noise_generator(7)
    assert g.device == torch.device("cpu")
    want = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), device="cpu").to(x)
    assert torch.equal(noise_like(x, g), want) and noise_like(x, g).dtype == torch.float64
    assert noise_generator(7, "cpu").device == torch.device("cpu")
    proc = GaussianDiffusion(schedules.linear(100))
    model = lambda x, t: torch.zeros_like(x)  # noqa: E731
    a = sample_ddpm(model, proc, x.clone(), steps=10, spacing=even, generator=noise_generator(3))
    b = sample_ddpm(model, proc, x.clone(), steps=10, spacing=even, generator=noise_generator(3))
    c = sample_ddpm(model, proc, x.clone(), steps=10, spacing=even, generator=noise_generator(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
