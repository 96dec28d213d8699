"""LatentDiffusion: latent scaling, EMA warm-up, UNet presets, checkpoint round trip, overfitting."""

from __future__ import annotations

import hydra
import pytest
import torch
from torch import nn

from ldm.diffusion.ema import EMA
from ldm.diffusion.module import LatentDiffusion
from ldm.errors import ConfigError
from ldm.utils.config import plain
from tests.conftest import compose_cfg

TINY = {
    "net": {"_target_": "ldm.nets.unet.UNet", "model_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
            "attention_resolutions": [2], "num_heads": 4, "dropout": 0.0},
    "process": {"schedule": {"_target_": "ldm.diffusion.schedules.scaled_linear", "timesteps": 100}},
    "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 2e-3},
    "sampler": {"_target_": "ldm.diffusion.samplers.sample_ddim", "_partial_": True, "steps": 5, "eta": 0.0,
                "spacing": {"_target_": "ldm.diffusion.spacing.even", "_partial_": True}},
}


def make_ld(**kw):
    return LatentDiffusion(**{"latent_shape": [2, 4, 4], **TINY, **kw})


def latents(n=600, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(n, 2, 4, 4, generator=g) * torch.tensor([0.4, 1.3]).view(1, 2, 1, 1) + 0.7
    return mean, torch.full_like(mean, 0.1)


@pytest.mark.parametrize("scaling,center", [("global", False), ("global", True), ("channel", False)])
def test_scaled_latents_have_unit_std(scaling, center):
    ld = make_ld(scaling=scaling, center=center)
    mean, std = latents()
    ld.fit_scaling(mean, std)
    z = ld.scale(mean)
    if scaling == "channel":
        per_ch = z.transpose(0, 1).reshape(2, -1)
        assert torch.allclose(per_ch.std(1), torch.ones(2), atol=1e-4)
        assert torch.allclose(per_ch.mean(1), torch.zeros(2), atol=1e-4)
    else:
        assert z.std().item() == pytest.approx(1.0, abs=1e-4)
        assert (z.mean().abs().item() < 1e-4) == center
        assert torch.allclose(ld.latent_scale[0], ld.latent_scale[1])  # one global factor
    assert torch.allclose(ld.unscale(z), mean, atol=1e-5)


def test_posterior_sample_scaling_includes_std():
    mean, std = latents()
    a, b = make_ld(latent="mean"), make_ld(latent="sample")
    a.fit_scaling(mean, std * 10)
    b.fit_scaling(mean, std * 10)
    assert b.scale_factor < a.scale_factor  # sampled latents spread more, so a smaller factor


def test_scale_factor_survives_checkpoint(tmp_path):
    ld = make_ld(scaling="channel")
    ld.fit_scaling(*latents())
    path = tmp_path / "ld.ckpt"
    torch.save({"state_dict": ld.state_dict(), "hyper_parameters": dict(ld.hparams),
                "pytorch-lightning_version": "2.6.6"}, path)
    again = LatentDiffusion.load_from_checkpoint(path, weights_only=True)
    assert torch.equal(again.latent_scale, ld.latent_scale) and torch.equal(again.latent_shift, ld.latent_shift)
    assert bool(again.scaling_fitted)
    for k, v in ld.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def test_training_needs_fitted_scaling():
    with pytest.raises(RuntimeError, match="fit_scaling"):
        make_ld().on_fit_start()


def test_bad_switches():
    with pytest.raises(ConfigError, match="mean, sample"):
        make_ld(latent="mode")
    with pytest.raises(ConfigError, match="global, channel"):
        make_ld(scaling="pixel")
    with pytest.raises(ConfigError, match="divisible"):
        make_ld(latent_shape=[2, 3, 3])


def test_ema_warmup_and_update():
    net = nn.Linear(2, 2)
    ema = EMA(net, decay=0.999)
    assert ema.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): follows the weights at first
    before = ema.net.weight.clone()
    with torch.no_grad():
        net.weight.add_(1.0)
    ema.update(net)
    assert torch.allclose(ema.net.weight, 0.1 * before + 0.9 * net.weight)
    for _ in range(20_000):
        ema.num_updates += 1
    assert ema.current_decay() == 0.999
    assert EMA(net, 0.999, warmup=False).current_decay() == 0.999


@pytest.mark.parametrize("preset", ["unet_s", "unet_m", pytest.param("unet_l", marks=pytest.mark.slow)])
@pytest.mark.parametrize("shape", [(2, 4, 4), (1, 16, 16)])
def test_unet_presets_output_shape(preset, shape, tmp_path):
    cfg = compose_cfg([f"diffusion={preset}"], output_dir=tmp_path)
    net = hydra.utils.instantiate(plain(cfg.diffusion.net), in_channels=shape[0], num_classes=10)
    x = torch.randn(2, *shape)
    out = net(x, torch.tensor([0, 999]), y=torch.tensor([3, 10]))
    assert out.shape == x.shape


@pytest.mark.slow
def test_overfit_one_batch_of_latents():
    """200 AdamW steps on one fixed batch: the eps-loss falls by at least 4x (measured ~8x)."""
    torch.manual_seed(0)
    ld = make_ld()
    mean, std = latents(64)
    ld.fit_scaling(mean, std)
    z = ld.scale(mean)
    opt = torch.optim.AdamW(ld.net.parameters(), lr=2e-3)
    t = torch.randint(0, 100, (64,), generator=torch.Generator().manual_seed(1))
    noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(2))
    first = ld.process.loss(ld.net, z, t=t, noise=noise).item()
    for _ in range(200):
        loss = ld.process.loss(ld.net, z, t=t, noise=noise)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 4, (first, loss.item())


def test_class_conditional_sampling_shapes():
    ld = make_ld(class_conditional=True, num_classes=10, guidance_scale=2.0)
    ld.fit_scaling(*latents())
    ld.set_decoder(lambda z: z.mean(1, keepdim=True).repeat_interleave(4, -1).repeat_interleave(4, -2))
    images, nfe = ld.generate(12, seed=0)
    assert images.shape == (12, 1, 16, 16) and nfe == 5
    with pytest.raises(ConfigError, match="labelled"):
        make_ld(class_conditional=True, num_classes=0)


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_clip_x0_follows_the_autoencoders_latent_range():
    """auto: clip only where the autoencoder bounds its latents (identity); the bounds live in the scaled space."""
    ld = make_ld()
    mean, std = latents()
    ld.fit_scaling(mean, std)
    assert ld.clip_range() is None  # no range given: a learned latent is not clipped
    ld.set_decoder(lambda z: z, (-1.0, 1.0))
    lo, hi = ld.clip_range()
    assert torch.allclose(ld.unscale(lo), torch.full_like(lo, -1.0), atol=1e-5)
    assert torch.allclose(ld.unscale(hi), torch.full_like(hi, 1.0), atol=1e-5)
    for p in ld.ema.net.parameters():  # a wild network: its unclipped samples leave the data range
        torch.nn.init.normal_(p, std=0.5)
    z, _ = ld.sample_latents(16, seed=0)
    assert ld.unscale(z).abs().max() <= 1 + 1e-4
    off = make_ld(clip_x0=False)
    off.fit_scaling(mean, std)
    off.ema.net.load_state_dict(ld.ema.net.state_dict())
    off.set_decoder(lambda z: z, (-1.0, 1.0))
    assert off.clip_range() is None and off.unscale(off.sample_latents(16, seed=0)[0]).abs().max() > 1.5
    with pytest.raises(ConfigError, match="bounded latent range"):
        make_ld(clip_x0=True).clip_range()
    with pytest.raises(ConfigError, match="clip_x0"):
        make_ld(clip_x0="sometimes")


def test_noise_on_device_is_reproducible_and_on_a_cpu_the_cpu_stream():
    """sampler_noise=device draws with a generator on the model's device; on a CPU that generator is a CPU one,
    so the samples equal the default's bit for bit (the same seed, the same stream), and a seed reproduces them.
    On a GPU the device stream differs from the CPU one: make gpu-check measures it."""
    ld = make_ld()
    ld.fit_scaling(*latents())
    cpu, _ = ld.sample_latents(6, seed=5)
    ld.noise_on_device = True
    dev, _ = ld.sample_latents(6, seed=5)
    again, _ = ld.sample_latents(6, seed=5)
    other, _ = ld.sample_latents(6, seed=6)
    assert torch.equal(cpu, dev) and torch.equal(dev, again) and not torch.equal(dev, other)
    assert LatentDiffusion.noise_on_device is False  # the default: noise on the CPU
