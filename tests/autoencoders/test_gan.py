"""Plain GAN: loss chosen by _target_, R1, validation without an encoder."""

from __future__ import annotations

import pytest
import torch

from ldm.autoencoders.gan import GAN
from ldm.losses import HingeLoss, NonSaturatingLoss, r1_penalty
from tests.autoencoders.helpers import ADAM, SMALL_D, adam_steps, digits, fit, row_kwargs

HINGE = {"_target_": "ldm.losses.HingeLoss"}


def make(**kw) -> GAN:
    return GAN(**row_kwargs("gan", **{"discriminator": SMALL_D, "optimizer": ADAM, **kw}))


@pytest.mark.parametrize("cfg,loss", [({"_target_": "ldm.losses.NonSaturatingLoss"}, NonSaturatingLoss()),
                                      (HINGE, HingeLoss())])
def test_loss_is_chosen_by_target(cfg, loss):
    torch.manual_seed(0)
    gan = make(adv_loss=cfg).eval()
    x, z = digits(4), torch.randn(4, *gan.latent_shape)
    real, fake = gan.discriminator(x), gan.discriminator(gan.generator(z))
    assert gan.generator_loss(x, z)["loss"].item() == pytest.approx(loss.generator(fake).item(), rel=1e-6)
    assert gan.discriminator_loss(x, z)["loss"].item() == pytest.approx(loss.discriminator(real, fake).item(), rel=1e-6)


def test_r1_adds_half_gamma_times_the_penalty():
    torch.manual_seed(0)
    gan = make(r1_gamma=10.0).eval()
    x, z = digits(4), torch.randn(4, *gan.latent_shape)
    terms = gan.discriminator_loss(x, z)
    xr = x.clone().requires_grad_(True)
    real, fake = gan.discriminator(xr), gan.discriminator(gan.generator(z))
    r1 = r1_penalty(real, xr)
    assert r1.item() > 0 and terms["r1"].item() == pytest.approx(r1.item(), rel=1e-5)
    expected = NonSaturatingLoss().discriminator(real, fake) + 5.0 * r1
    assert terms["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_each_batch_steps_discriminator_then_generator_once():
    gan = make()
    trainer = fit(gan, digits(16), steps=3)
    opt_g, opt_d = trainer.optimizers
    assert (adam_steps(opt_g), adam_steps(opt_d)) == (3, 3)
    assert {"train/d_loss", "train/g_loss", "train/logits_real", "train/logits_fake"} <= set(trainer.callback_metrics)


def test_validation_reports_adversarial_losses_without_reconstruction():
    torch.manual_seed(0)
    gan = make().eval()
    with torch.no_grad():
        terms = gan.validation_loss(digits(8))
        again = gan.validation_loss(digits(8))
    assert "rec" not in terms and terms["loss"] is terms["g_loss"]
    assert {"d_loss", "logits_real", "logits_fake"} <= set(terms)
    assert terms["loss"].item() == again["loss"].item()  # fixed prior samples: val/loss moves only with the model
