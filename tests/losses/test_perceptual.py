"""The VAE-GAN's LDM-recipe parts: PatchGAN receptive fields, the feature-distance perceptual loss, the learned
log-variance NLL, and LPIPS's clear error where the package is absent."""

from __future__ import annotations

import math

import pytest
import torch

from ldm.autoencoders.vae_gan import VAEGAN
from ldm.errors import ConfigError
from ldm.losses.perceptual import FeatureDistance, LPIPSLoss
from ldm.nets.classifier import ConvClassifier
from ldm.nets.discriminators import NLayerDiscriminator
from tests.autoencoders.helpers import ADAM, SMALL_D, digits, row_kwargs


@pytest.mark.parametrize("n_layers,rf", [(1, 16), (2, 34), (3, 70)])  # 70: pix2pix's 70x70 PatchGAN
def test_patchgan_receptive_field(n_layers, rf):
    d = NLayerDiscriminator(3, ch=8, n_layers=n_layers, batch_norm=False)
    assert d.receptive_field == rf


def test_feature_distance_is_zero_on_equal_images_and_trains_only_the_input():
    torch.manual_seed(0)
    loss = FeatureDistance(ConvClassifier(1, 10, width=4, feature_dim=8))
    x = digits(4)
    assert loss(x, x).item() == 0.0
    x_hat = (x + 0.3 * torch.randn_like(x)).requires_grad_(True)
    value = loss(x_hat, x)
    value.backward()
    assert value.item() > 0 and x_hat.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.net.parameters())  # frozen
    loss.train()
    assert not loss.net.training  # never put in training mode (dropout would make it random)


def make(**kw) -> VAEGAN:
    return VAEGAN(**row_kwargs("vae_gan", **{"discriminator": SMALL_D, "optimizer": ADAM, "max_steps": 4, **kw}))


def test_learned_logvar_is_the_laplace_nll_of_the_reconstruction_terms():
    """logvar = 0 leaves the loss as it was; logvar = log 2 halves the L1 term and adds log 2 per pixel; the
    parameter is optimised with the autoencoder."""
    torch.manual_seed(0)
    plain, x = make(), digits(4)
    torch.manual_seed(1)
    base = plain.losses(x, sample=False)
    for init, expect in ((0.0, lambda rec: rec), (math.log(2.0), lambda rec: rec / 2 + math.log(2.0) * 256)):
        m = make(logvar_init=init)
        m.load_state_dict({**plain.state_dict(), "logvar": torch.tensor(init)})
        terms = m.losses(x, sample=False)
        assert terms["rec"].item() == pytest.approx(base["rec"].item(), rel=1e-6)
        assert terms["nll"].item() == pytest.approx(expect(base["rec"].item()), rel=1e-6)
        assert terms["loss"].item() == pytest.approx((terms["nll"] + m.kl_weight * terms["kl"]).item(), rel=1e-6)
    opt_ae = m.configure_optimizers()[0]
    assert any(p is m.logvar for g in opt_ae.param_groups for p in g["params"])


def test_lpips_without_its_package_is_a_config_error():
    try:
        import lpips  # noqa: F401
        pytest.skip("lpips is installed here")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="lpips"):
        LPIPSLoss()
