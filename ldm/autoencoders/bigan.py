"""BiGAN / ALI: encoder and generator trained against one discriminator on (x, z) pairs.

Donahue et al., 2017 (BiGAN); Dumoulin et al., 2017 (ALI); Donahue & Simonyan, 2019 (BigBiGAN).
"""

from __future__ import annotations

import torch

from ldm.autoencoders.gan import EncodedGAN
from ldm.losses import r1_penalty
from ldm.utils.config import build

class BiGAN(EncodedGAN):
    """D separates (x, E(x)) from (G(z), z); E and G are trained to swap its verdicts.

    At the optimum E inverts G, but only as far as D can tell pairs apart: it reconstructs
    semantics rather than pixels (claim C4). `recon_weight` > 0 adds a pixel L1 on G(E(x))
    (0 = pure BiGAN); the discriminator's `unary: true` adds BigBiGAN's x-only and z-only scores
    (Donahue & Simonyan, 2019), whose losses are summed with the joint one.
    """

    def __init__(self, *, recon_weight: float, **gan) -> None:
        """`recon_weight` and everything the GAN takes (`**gan`: backbone, discriminator, losses, optimizers, ...)."""
        super().__init__(**gan)
        self.recon_weight = recon_weight

    def build_discriminator(self, cfg: dict) -> torch.nn.Module:
        return build(cfg, in_channels=self.in_channels, image_size=self.image_size, latent_shape=self.latent_shape)

    def generator_parameters(self):
        return [*self.generator.parameters(), *self.encoder.parameters()]

    def discriminator_loss(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            z_hat, x_fake = self.encoder(x), self.generator(z)
        r1 = self.r1_gamma > 0 and torch.is_grad_enabled()
        if r1:
            x, z_hat = x.detach().requires_grad_(True), z_hat.requires_grad_(True)
        real, fake = self.discriminator(x, z_hat), self.discriminator(x_fake, z)
        loss = sum(self.adv_loss.discriminator(real[k], fake[k]) for k in real)
        terms = {"loss": loss, "logits_real": real["xz"].mean(), "logits_fake": fake["xz"].mean()}
        if r1:
            terms["r1"] = r1_penalty(sum(real.values()), x, z_hat)
            terms["loss"] = terms["loss"] + 0.5 * self.r1_gamma * terms["r1"]
        return terms

    def generator_loss(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """E wants (x, E(x)) scored fake and G wants (G(z), z) scored real: D's labels swapped.

        generator(-s) is the loss of making a score look fake (hinge: +s; non-saturating: softplus(s)).
        """
        z_hat = self.encoder(x)
        real, fake = self.discriminator(x, z_hat), self.discriminator(self.generator(z), z)
        loss = sum(self.adv_loss.generator(fake[k]) + self.adv_loss.generator(-real[k]) for k in real)
        terms = {"loss": loss}
        if self.recon_weight > 0:
            terms["rec"] = self.pixel_loss(self.generator(z_hat), x)
            terms["loss"] = loss + self.recon_weight * terms["rec"]
        return terms
