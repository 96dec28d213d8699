"""ldm in diffusers (ldm.interop.diffusers): the UNet as UNet2DModel, the scheduler, the latent scale, and a
diffusers sampling loop that reproduces ldm's samples from the same noise."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from ldm.errors import ConfigError
from tests.conftest import compose_cfg

pytest.importorskip("diffusers")


@pytest.fixture(scope="module", params=[False, True], ids=["unconditional", "class-conditional"])
def run(request, tmp_path_factory) -> Path:
    """A debug=fast run whose UNet has model_channels = 32 (one GroupNorm group count, as diffusers has)."""
    from ldm.run import train

    out = tmp_path_factory.mktemp("interop") / "run"
    overrides = ["debug=fast", "logger=none", "metrics.features=null", "diffusion.net.model_channels=32",
                 f"diffusion.class_conditional={str(request.param).lower()}"]
    train.main(compose_cfg(overrides, output_dir=out))
    assert json.loads((out / "metrics.json").read_text())["status"] == "ok"
    return out


def ldm_ddim(model, n: int, seed: int, steps: int, y=None) -> torch.Tensor:
    from ldm.diffusion.samplers import sample_ddim
    from ldm.diffusion.spacing import trailing

    sampler = functools.partial(sample_ddim, steps=steps, spacing=trailing, eta=0.0)
    z, nfe = model.diffusion.sample_latents(n, seed=seed, y=y, sampler=sampler)
    assert nfe == steps
    return z


@pytest.mark.slow
def test_a_diffusers_pipeline_reproduces_ldms_samples_from_the_same_noise(run, tmp_path):
    """The converted UNet and scheduler, in diffusers' own sampling loop, give ldm's DDIM (trailing) latents from
    the same start noise to float rounding, and the same decoded images; also after save_pretrained /
    from_pretrained of both."""
    from diffusers import DDIMScheduler, UNet2DModel

    from ldm.interop.diffusers import sample, to_diffusers
    from ldm.run.loading import load

    model = load(run)
    parts = to_diffusers(model)
    ld = model.diffusion
    y = torch.arange(4) % ld.num_classes if ld.num_classes else None
    ours = ldm_ddim(model, 4, seed=3, steps=8, y=y)
    noise = torch.randn((4, *ld.latent_shape), generator=torch.Generator().manual_seed(3))
    theirs = sample(parts, noise, steps=8, labels=y, decode=False)
    scale = ours.abs().max().item()
    assert (ours - theirs).abs().max().item() <= 1e-5 * max(1.0, scale)
    images = model.autoencoder.decode(parts.unscale(ours)).clamp(-1, 1)
    assert (images - parts.decode(parts.unscale(theirs))).abs().max().item() < 1e-4
    parts.unet.save_pretrained(tmp_path / "unet")
    parts.scheduler.save_pretrained(tmp_path / "unet")
    parts.unet = UNet2DModel.from_pretrained(tmp_path / "unet")
    parts.scheduler = DDIMScheduler.from_pretrained(tmp_path / "unet")
    again = sample(parts, noise, steps=8, labels=y, decode=False)
    assert torch.equal(again, theirs)


@pytest.mark.slow
def test_the_latent_scale_shim_and_diffusers_scaling_factor(run):
    from ldm.interop.diffusers import to_diffusers
    from ldm.run.loading import load

    model = load(run)
    parts = to_diffusers(model)
    z = torch.randn(3, *model.diffusion.latent_shape)
    assert torch.allclose(parts.scale(z), model.diffusion.scale(z)) and torch.allclose(parts.unscale(parts.scale(z)), z)
    # diffusion.scaling=global without centring (the default): one number, diffusers' scaling_factor
    assert parts.scaling_factor == pytest.approx(model.diffusion.scale_factor)
    assert any("even spacing" in n for n in parts.notes)  # the default sampler's spacing has no diffusers twin


def test_a_unet_with_mixed_group_counts_is_refused_by_name(fast_run):
    """debug=fast's UNet (model_channels 16) has GroupNorms of 16 and 32 groups: one error naming the fix."""
    from ldm.interop.diffusers import to_diffusers
    from ldm.run.loading import load

    with pytest.raises(ConfigError, match="model_channels = 32 k"):
        to_diffusers(load(fast_run))
