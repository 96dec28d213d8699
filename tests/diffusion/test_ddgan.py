"""Denoising Diffusion GAN (diffusion=ddgan): its schedule, its posterior step against DDPM's, its real pairs'
marginals, and the module (NFE = T, seeded sampling, a few adversarial steps move both networks)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from ldm.diffusion.ddgan import DenoisingDiffusionGAN, forward_pair, posterior_step
from ldm.diffusion.process import GaussianDiffusion
from ldm.diffusion.samplers import sample_ddpm
from ldm.diffusion.schedules import vp
from ldm.errors import ConfigError


def test_vp_schedule_is_the_sde_at_T_points():
    """alpha-bar_T / alpha-bar_0 = exp(-(t beta_min + t^2 (beta_max - beta_min) / 2)) between t = eps and 1."""
    betas = vp(4, 0.1, 20.0)
    assert len(betas) == 4 and bool((betas[1:] > betas[:-1]).all())
    abar = torch.cumprod(1 - betas, 0)
    expected = lambda t: math.exp(-(t * 0.1 + 0.5 * t ** 2 * 19.9))  # noqa: E731
    assert float(abar[-1]) == pytest.approx(expected(1.0) / expected(1e-3), rel=1e-9)
    assert float(abar[1]) == pytest.approx(expected(1e-3 + (1 - 1e-3) * 2 / 4) / expected(1e-3), rel=1e-9)


def test_posterior_step_is_the_ddpm_samplers_step():
    """The training posterior and DDPM's ancestral step give the same x_{t-1} from the same x0, x_t and noise."""
    process = GaussianDiffusion(vp(4), "x0")
    x0 = torch.randn(5, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    for k in (3, 2, 1):
        x_t = torch.randn(5, 2, 4, 4, generator=torch.Generator().manual_seed(k))
        seen = []
        sample_ddpm(lambda x, t: x0, process, x_t, steps=2, spacing=lambda T, s: [k, k - 1],
                    generator=torch.Generator().manual_seed(7), callback=seen.append)
        noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7))
        ours = posterior_step(process, x0, x_t, torch.full((5,), k), noise)
        torch.testing.assert_close(ours, seen[1]["x"], rtol=1e-5, atol=1e-6)
    t0 = posterior_step(process, x0, x_t, torch.zeros(5, dtype=torch.long), noise)
    assert torch.equal(t0, x0)  # the step before the first is the data


def test_real_pairs_and_posterior_keep_the_forward_marginals():
    """x_{t-1} from the posterior at the true x0, given x_t from a real pair, is distributed as q(x_{t-1} | x0):
    mean sqrt(abar_{t-1}) x0, variance 1 - abar_{t-1}; and x_t as q(x_t | x0)."""
    process = GaussianDiffusion(vp(4), "x0")
    n, x0 = 200_000, torch.full((200_000, 1), 0.8, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    for k in (1, 2, 3):
        t = torch.full((n,), k)
        _, x_t = forward_pair(process, x0, t, generator=g)
        prev = posterior_step(process, x0, x_t, t, torch.randn(x0.shape, generator=g, dtype=x0.dtype))
        a_t, a_prev = process.alphas_cumprod[k], process.alphas_cumprod[k - 1]
        assert float(x_t.mean()) == pytest.approx(0.8 * float(a_t.sqrt()), abs=0.01)
        assert float(x_t.var()) == pytest.approx(float(1 - a_t), abs=0.01)
        assert float(prev.mean()) == pytest.approx(0.8 * float(a_prev.sqrt()), abs=0.01)
        assert float(prev.var()) == pytest.approx(float(1 - a_prev), abs=0.01)


TINY = {
    "net": {"_target_": "ldm.nets.unet.UNet", "model_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
            "attention_resolutions": [2], "num_heads": 4, "dropout": 0.0},
    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3, "betas": [0.5, 0.9]},
    "disc_optimizer": {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3, "betas": [0.5, 0.9]},
    "discriminator": {"_target_": "ldm.nets.discriminators.TimeDiscriminator", "ch": 16, "blocks": 2},
    "adv_loss": {"_target_": "ldm.losses.NonSaturatingLoss"},
    "z_channels": 2, "r1_gamma": 0.02,  # the paper's R1 weight; conf/diffusion/ddgan.yaml holds the searched values
}


def make(**kw):
    m = DenoisingDiffusionGAN(latent_shape=[2, 4, 4], **{**TINY, **kw})
    mean = torch.randn(256, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    m.fit_scaling(mean, torch.zeros_like(mean))
    m.set_decoder(lambda z: z)
    return m, mean


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_sampling_takes_T_evaluations_and_is_seeded():
    m, _ = make(steps=3)
    torch.manual_seed(0)
    for p in m.ema.net.parameters():  # G's output layer starts at zero (x0' = 0 whatever z): give it weights
        torch.nn.init.normal_(p, std=0.05)
    a, nfe = m.sample_latents(6, seed=1)
    b, _ = m.sample_latents(6, seed=1)
    c, _ = m.sample_latents(6, seed=2)
    assert nfe == 3 and a.shape == (6, 2, 4, 4) and torch.equal(a, b) and not torch.equal(a, c)


def test_bad_settings_are_config_errors():
    for bad in ({"steps": 0}, {"steps": True}, {"lazy_reg": 0}, {"r1_gamma": -1.0}):
        with pytest.raises(ConfigError):
            make(**bad)


@pytest.mark.slow  # a Lightning fit (~1-2 s): the slow tier; `train.py diffusion=ddgan debug=fast` runs in test_train
def test_adversarial_steps_move_generator_and_discriminator():
    torch.manual_seed(0)
    m, mean = make(lazy_reg=2)
    before_g = [p.detach().clone() for p in m.net.parameters()]
    before_d = [p.detach().clone() for p in m.discriminator.parameters()]
    data = torch.utils.data.TensorDataset(mean, torch.zeros_like(mean), torch.zeros(len(mean), dtype=torch.long))
    trainer = L.Trainer(max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(m, torch.utils.data.DataLoader(data, batch_size=32))
    assert m.global_step == 6 and m.d_steps == 3  # 3 batches of one D step and one G step
    assert any(not torch.equal(a, b) for a, b in zip(before_g, m.net.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_d, m.discriminator.parameters()))
    assert all(torch.isfinite(p).all() for p in m.parameters())
