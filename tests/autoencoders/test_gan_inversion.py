"""GAN inversion: stage 1a trains the GAN, stage 1b only the encoder, whose latent error then drops."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from ldm.autoencoders.gan_inversion import GANInversion
from tests.autoencoders.helpers import ADAM, SMALL_D, adam_steps, changed, digits, fit, row_kwargs, snapshot


def make(**kw) -> GANInversion:
    return GANInversion(**row_kwargs("gan_inversion", **{"discriminator": SMALL_D, "optimizer": ADAM, **kw}))


def latent_error(m: GANInversion, z: torch.Tensor) -> float:
    """Mean over z of ||E(G(z)) - z||^2 (summed over the latent): what stage 1b minimises."""
    with torch.no_grad():
        return (m.encoder(m.generator(z)) - z).pow(2).flatten(1).sum(1).mean().item()


class AtSwitch(L.Callback):
    """Record the latent error and the GAN's weights when stage 1b begins."""

    def __init__(self, z: torch.Tensor) -> None:
        self.z, self.error, self.gan = z, None, None

    def on_train_batch_start(self, trainer, m, batch, batch_idx) -> None:
        if m.batch_step == m.gan_steps:
            self.error, self.gan = latent_error(m, self.z), snapshot(m.generator) | snapshot(m.discriminator)


@pytest.mark.slow
def test_encoder_inverts_the_frozen_generator():
    """10 GAN batches, then 40 encoder batches of 16 digits: the latent error falls >= 1.1x.

    Measured 1.27x (seeds 0, 1, 2: 1.27x, 1.23x, 1.19x; 90 batches: 1.39x). Modest because a barely
    trained tiny G is only partly invertible, not because E stalls.
    """
    torch.manual_seed(0)
    m = make(max_steps=50, gan_fraction=0.2)
    assert m.gan_steps == 10
    z = torch.randn(64, *m.latent_shape, generator=torch.Generator().manual_seed(123))
    probe = AtSwitch(z)
    trainer = fit(m, digits(64), steps=50, batch_size=16, callbacks=(probe,))
    assert probe.error is not None
    assert latent_error(m, z) < probe.error / 1.1, (probe.error, latent_error(m, z))
    # stage 1b moved only the encoder: the GAN is exactly as it was at the switch
    assert all(torch.equal(v, probe.gan[k]) for k, v in (snapshot(m.generator) | snapshot(m.discriminator)).items())
    opt_g, opt_d, opt_e = trainer.optimizers
    assert (adam_steps(opt_g), adam_steps(opt_d), adam_steps(opt_e)) == (10, 10, 40)


def test_encoder_loss_terms():
    torch.manual_seed(0)
    m = make(latent_weight=2.0, pixel_weight=0.5)
    x, z = digits(4), torch.randn(4, *m.latent_shape)
    terms = m.encoder_loss(x, z)
    with torch.no_grad():
        latent = (m.encoder(m.generator(z)) - z).pow(2).flatten(1).sum(1).mean()
        rec = (m.generator(m.encoder(x)) - x).abs().flatten(1).sum(1).mean()
    assert torch.allclose(terms["latent"], latent) and torch.allclose(terms["rec"], rec)
    assert torch.allclose(terms["loss"], 2.0 * latent + 0.5 * rec)


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_refinement_lowers_pixel_error_and_leaves_g_alone():
    torch.manual_seed(0)
    plain_ = make().eval()
    refined = make(refine_steps=20).eval()
    refined.load_state_dict(plain_.state_dict())
    before = snapshot(refined.generator)
    x = digits(8)
    with torch.no_grad():  # as evaluation code calls it
        z0, z1 = plain_.encode(x), refined.encode(x)
        e0, e1 = plain_.pixel_loss(plain_.decode(z0), x), refined.pixel_loss(refined.decode(z1), x)
    assert e1 < e0 and not z1.requires_grad
    assert not changed(before, refined.generator)
    assert all(p.grad is None for p in refined.generator.parameters())


@pytest.mark.slow  # 5 refinements of 8 digits (~3 s): the slow tier
def test_refinement_error_falls_monotonically_with_its_steps():
    """On a fixed generator the pixel error of G(z) after k refinement steps (from the same E(x)) does not rise
    as k grows: 0, 5, 10, 20, 40 steps."""
    torch.manual_seed(0)
    m, x = make().eval(), digits(8)
    with torch.no_grad():
        z0 = m.encoder(x)
    errors = []
    for k in (0, 5, 10, 20, 40):
        m.refine_steps = k
        z = m.refine(x, z0) if k else z0
        with torch.no_grad():
            errors.append(m.pixel_loss(m.generator(z), x).item())
    assert all(b <= a + 1e-6 for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < errors[0]


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_matched_budget_gives_the_gan_every_stage1_batch_and_the_encoder_its_own_after():
    """encoder_steps set: the GAN trains for all max_steps (the other rows' stage-1 budget), the encoder for
    encoder_steps more, which the stage asks its trainer for (extra_steps); a bad count is one clear error."""
    torch.manual_seed(0)
    m = make(max_steps=6, encoder_steps=4, gan_fraction=0.5)
    assert (m.gan_steps, m.extra_steps) == (6, 4) and make(max_steps=6).extra_steps == 0
    trainer = fit(m, digits(32), steps=6 + m.extra_steps, batch_size=8)
    opt_g, opt_d, opt_e = trainer.optimizers
    assert (adam_steps(opt_g), adam_steps(opt_d), adam_steps(opt_e)) == (6, 6, 4)
    with pytest.raises(ValueError, match="encoder_steps must be >= 1"):
        make(encoder_steps=0)


def test_refinement_objective_adds_the_weighted_feature_distance():
    """refine_loss = pixel loss of G(z) + refine_feature_weight x the feature distance (here L1 as a stand-in
    feature network, so the known answer is pixel + 2 x mean |G(z) - x|); weight 0 builds no feature network."""
    torch.manual_seed(0)
    m = make(refine_steps=3, refine_feature_weight=2.0, refine_features={"_target_": "torch.nn.L1Loss"}).eval()
    assert make(refine_features={"_target_": "torch.nn.L1Loss"}).refine_features is None
    x = digits(4)
    with torch.no_grad():
        z = m.encoder(x)
        x_hat = m.generator(z)
        expected = m.pixel_loss(x_hat, x) + 2.0 * (x_hat - x).abs().mean()
        assert torch.allclose(m.refine_loss(z, x), expected)
        z1 = m.encode(x)
        assert m.refine_loss(z1, x) < m.refine_loss(z, x)


@pytest.mark.slow  # over 5 s here: the slow tier (CI runs it after the fast one)
def test_refinement_domain_term_is_the_weighted_encoder_consistency():
    """refine_encoder_weight adds w x ||z - E(G(z))||^2 (summed per latent, IDInvert's domain regulariser):
    the known answer from the module's own G and E; refinement lowers the whole objective."""
    torch.manual_seed(0)
    m = make(refine_steps=3, refine_encoder_weight=2.0).eval()
    plain_ = make().eval()
    plain_.load_state_dict(m.state_dict())
    x = digits(4)
    with torch.no_grad():
        z = m.encoder(x)
        x_hat = m.generator(z)
        domain = (z - m.encoder(x_hat)).pow(2).flatten(1).sum(1).mean()
        assert domain > 0
        assert torch.allclose(m.refine_loss(z, x), plain_.refine_loss(z, x) + 2.0 * domain)
        z1 = m.encode(x)
        assert m.refine_loss(z1, x) < m.refine_loss(z, x)
    assert all(p.grad is None for p in m.encoder.parameters())
