"""BiGAN: the discriminator sees (x, E(x)) and (G(z), z) pairs; E and G learn from the joint loss."""

from __future__ import annotations

import pytest
import torch

from ldm.autoencoders.bigan import BiGAN
from tests.autoencoders.helpers import ADAM, SMALL_JOINT, digits, row_kwargs


def make(**kw) -> BiGAN:
    return BiGAN(**row_kwargs("bigan", **{"discriminator": SMALL_JOINT, "optimizer": ADAM, **kw}))


def record_pairs(bigan: BiGAN) -> list[tuple[torch.Tensor, torch.Tensor]]:
    calls = []
    bigan.discriminator.register_forward_pre_hook(lambda m, args: calls.append(tuple(a.detach() for a in args)))
    return calls


def test_discriminator_receives_matching_pairs():
    torch.manual_seed(0)
    bigan, x = make(), digits(6)
    z = torch.randn(6, *bigan.latent_shape)
    calls = record_pairs(bigan)
    bigan.discriminator_loss(x, z)
    (x_real, z_real), (x_fake, z_fake) = calls
    assert x_real.shape[0] == z_real.shape[0] == x_fake.shape[0] == z_fake.shape[0] == 6
    assert z_real.shape[1:] == z_fake.shape[1:] == bigan.latent_shape
    assert torch.equal(x_real, x) and torch.allclose(z_real, bigan.encoder(x))  # (x, E(x))
    assert torch.equal(z_fake, z) and torch.allclose(x_fake, bigan.generator(z))  # (G(z), z)


def grad_norm(module: torch.nn.Module) -> float:
    return sum(p.grad.norm().item() for p in module.parameters() if p.grad is not None)


def test_encoder_and_generator_learn_from_the_joint_loss():
    """recon_weight=0: the only signal E and G get is through D(x, z)."""
    torch.manual_seed(0)
    bigan, x = make(recon_weight=0.0), digits(6)
    terms = bigan.generator_loss(x, torch.randn(6, *bigan.latent_shape))
    assert set(terms) == {"loss"}
    terms["loss"].backward()
    assert grad_norm(bigan.encoder) > 0 and grad_norm(bigan.generator) > 0
    # and the discriminator's loss leaves E and G untouched
    bigan.zero_grad()
    bigan.discriminator_loss(x, torch.randn(6, *bigan.latent_shape))["loss"].backward()
    assert grad_norm(bigan.encoder) == 0 and grad_norm(bigan.generator) == 0
    assert grad_norm(bigan.discriminator) > 0


def test_encoder_and_generator_swap_the_discriminator_labels():
    """Hinge: l_EG = mean s(x, E(x)) - mean s(G(z), z) (BigBiGAN), summed with the unary scores."""
    torch.manual_seed(0)
    bigan = make(adv_loss={"_target_": "ldm.losses.HingeLoss"},
                 discriminator={**SMALL_JOINT, "unary": True, "dropout": 0.0})
    x, z = digits(5), torch.randn(5, *bigan.latent_shape)
    real, fake = bigan.discriminator(x, bigan.encoder(x)), bigan.discriminator(bigan.generator(z), z)
    assert set(real) == {"xz", "x", "z"}
    expected = sum(real[k].mean() - fake[k].mean() for k in real)
    assert bigan.generator_loss(x, z)["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def test_recon_weight_adds_pixel_l1():
    torch.manual_seed(0)
    bigan = make(recon_weight=0.1, discriminator={**SMALL_JOINT, "dropout": 0.0})
    x, z = digits(5), torch.randn(5, *bigan.latent_shape)
    terms = bigan.generator_loss(x, z)
    rec = (bigan.generator(bigan.encoder(x)) - x).abs().flatten(1).sum(1).mean()
    assert terms["rec"].item() == pytest.approx(rec.item(), rel=1e-5)
    pure = make(discriminator={**SMALL_JOINT, "dropout": 0.0})
    pure.load_state_dict(bigan.state_dict())
    assert terms["loss"].item() == pytest.approx((pure.generator_loss(x, z)["loss"] + 0.1 * rec).item(), rel=1e-5)


def test_validation_loss_is_pixel_reconstruction():
    torch.manual_seed(0)
    bigan, x = make().eval(), digits(4)
    with torch.no_grad():
        terms = bigan.validation_loss(x)
        rec = (bigan.decode(bigan.encode(x)) - x).abs().flatten(1).sum(1).mean()
    assert terms["loss"].item() == pytest.approx(rec.item(), rel=1e-6)
    assert {"d_loss", "g_loss", "rec"} <= set(terms)


def test_lr_decay_is_constant_then_exponential_to_a_hundredth():
    from ldm.autoencoders.bigan import decay_factor

    got = [decay_factor(s, 100, 0.5) for s in (0, 49, 50, 75, 100, 120)]
    assert got == pytest.approx([1.0, 1.0, 1.0, 0.1, 0.01, 0.01])  # 0.01 ** (25 / 50) = 0.1 halfway
    assert decay_factor(10, 100, 0.0, final=0.5) == pytest.approx(0.5 ** 0.1)
    from ldm.errors import ConfigError

    with pytest.raises(ConfigError):
        make(lr_decay_start=1.5, max_steps=100)
    with pytest.raises(ConfigError):
        make(lr_decay_start=0.5, max_steps=None)


def test_ali_encoder_is_stochastic_and_d_sees_its_samples():
    """ALI: q(z | x) = N(mu, sigma^2); D is paired with a reparameterised sample, reconstruction uses the mean."""
    torch.manual_seed(0)
    ali, x = make(stochastic_encoder=True), digits(6)
    mean, std = ali.encode_distribution(x)
    assert mean.shape == std.shape == (6, *ali.latent_shape) and bool((std > 0).all())
    calls = record_pairs(ali)
    ali.discriminator_loss(x, torch.randn(6, *ali.latent_shape))
    z_real = calls[0][1]
    assert not torch.allclose(z_real, mean)  # a sample, not the mean
    assert torch.allclose(ali.encode(x), mean)  # the latent the pipeline caches and reconstructs from
    assert ali.encoder.conv_out.out_channels == 2 * ali.latent_shape[0]
