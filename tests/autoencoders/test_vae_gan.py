"""VAE-GAN (latent-diffusion recipe): the disc_start schedule in batches, no adversarial gradient before it."""

from __future__ import annotations

import pytest
import torch

from ldm.autoencoders.vae import VAE
from ldm.autoencoders.vae_gan import VAEGAN
from ldm.losses import adaptive_weight
from tests.autoencoders.helpers import ADAM, SMALL_D, adam_steps, changed, digits, fit, row_kwargs, snapshot


def make(**kw) -> VAEGAN:
    return VAEGAN(**row_kwargs("vae_gan", **{"discriminator": SMALL_D, "optimizer": ADAM, "max_steps": 4, **kw}))


def grads(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_no_adversarial_gradient_before_disc_start():
    """Before disc_start the encoder/decoder gradients are exactly the VAE's, the discriminator never moves."""
    torch.manual_seed(0)
    gan, x = make(), digits(8)
    vae = VAE(**row_kwargs("vae"))
    vae.load_state_dict({k: v for k, v in gan.state_dict().items() if not k.startswith("discriminator")})
    torch.manual_seed(1)
    gan.autoencoder_loss(x, adversarial=False)["loss"].backward()
    torch.manual_seed(1)  # same posterior sample
    vae.losses(x)["loss"].backward()
    for a, b in zip(grads(gan.encoder) + grads(gan.decoder), grads(vae.encoder) + grads(vae.decoder)):
        assert torch.equal(a, b)
    assert all(p.grad is None for p in gan.discriminator.parameters())
    # after disc_start the decoder's gradient differs (the comparison above is not vacuous)
    gan.zero_grad()
    torch.manual_seed(1)
    gan.autoencoder_loss(x, adversarial=True)["loss"].backward()
    assert not torch.equal(gan.decoder.last_layer.grad, vae.decoder.last_layer.grad)


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_disc_start_counts_batches_not_optimizer_steps():
    """max_steps=4, disc_start_fraction=0.5: D steps on batches 2 and 3 only; the autoencoder on all 4."""
    gan = make(disc_start_fraction=0.5)
    assert gan.disc_start == 2
    trainer = fit(gan, digits(32), steps=4)
    opt_ae, opt_d = trainer.optimizers
    assert (adam_steps(opt_ae), adam_steps(opt_d)) == (4, 2)
    assert trainer.global_step == 6  # Lightning counts optimizer steps: why schedules use batch_step


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_discriminator_frozen_before_disc_start():
    gan = make(disc_start_fraction=1.0)  # never within the 4-batch budget
    before = snapshot(gan.discriminator)
    trainer = fit(gan, digits(32), steps=3)
    assert not changed(before, gan.discriminator)
    assert adam_steps(trainer.optimizers[1]) == 0
    assert "train/g_loss" not in trainer.callback_metrics


def test_adversarial_term_uses_the_adaptive_weight():
    torch.manual_seed(0)
    gan, x = make(disc_weight=0.25), digits(8)
    torch.manual_seed(1)
    terms = gan.autoencoder_loss(x, adversarial=True)
    torch.manual_seed(1)
    base = gan.losses(x)
    g = gan.adv_loss.generator(gan.discriminator(base["x_hat"]))
    w = adaptive_weight(base["rec"], g, gan.decoder.last_layer) * 0.25
    assert terms["d_weight"].item() == pytest.approx(w.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx((base["loss"] + w * g).item(), rel=1e-5)


def test_perceptual_hook_adds_its_weighted_term():
    torch.manual_seed(0)
    x = digits(4)
    plain_gan = make()
    hooked = make(perceptual_loss={"_target_": "ldm.losses.PixelLoss", "p": 2}, perceptual_weight=0.5)
    hooked.load_state_dict(plain_gan.state_dict())
    a, b = plain_gan.losses(x, sample=False), hooked.losses(x, sample=False)
    p = (b["x_hat"] - x).pow(2).flatten(1).sum(1).mean()
    assert b["perceptual"].item() == pytest.approx(p.item(), rel=1e-5)
    assert b["loss"].item() == pytest.approx((a["loss"] + 0.5 * p).item(), rel=1e-5)
