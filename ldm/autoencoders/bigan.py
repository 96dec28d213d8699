"""BiGAN / ALI: encoder and generator trained against one discriminator on (x, z) pairs.

Donahue et al., 2017 (BiGAN); Dumoulin et al., 2017 (ALI); Donahue & Simonyan, 2019 (BigBiGAN).
"""

from __future__ import annotations

from typing import Optional

import torch

from ldm.autoencoders.gan import EncodedGAN
from ldm.errors import ConfigError
from ldm.losses import r1_penalty
from ldm.nets.encoder import Encoder
from ldm.utils.config import build
from ldm.utils.seeds import normal_like


def decay_factor(step: int, max_steps: int, start: float, final: float = 0.01) -> float:
    """The learning-rate multiplier of a schedule constant for the first `start` share of `max_steps`, then
    exponential down to `final` at `max_steps` (BiGAN's released MNIST recipe: 200 constant epochs, then 200 of
    exponential decay to 0.01 x the initial rate)."""
    begin = start * max_steps
    if step <= begin or max_steps <= begin:
        return 1.0
    return float(final ** (min(1.0, (step - begin) / (max_steps - begin))))


class BiGAN(EncodedGAN):
    """D separates (x, E(x)) from (G(z), z); E and G are trained to swap its verdicts.

    At the optimum E inverts G, but only as far as D can tell pairs apart: it reconstructs
    semantics rather than pixels (claim C4). `recon_weight` > 0 adds a pixel L1 on G(E(x))
    (0 = pure BiGAN); the discriminator's `unary: true` adds BigBiGAN's x-only and z-only scores
    (Donahue & Simonyan, 2019), whose losses are summed with the joint one.
    """

    def __init__(self, *, recon_weight: float, stochastic_encoder: bool, lr_decay_start: Optional[float],
                 max_steps: Optional[int], **gan) -> None:
        """`recon_weight`; `stochastic_encoder` (ALI: E(x) = mu + sigma * eps, reparameterised, Dumoulin et al.,
        2017); `lr_decay_start` (a share of `max_steps` after which both learning rates decay exponentially to
        0.01 x at `max_steps`; null: constant); and everything the GAN takes (`**gan`: backbone, discriminator,
        losses, optimizers, ...)."""
        super().__init__(**gan)
        if lr_decay_start is not None and not (0.0 <= lr_decay_start < 1.0 and max_steps):
            raise ConfigError(f"autoencoder.lr_decay_start={lr_decay_start} needs a value in [0, 1) and max_steps")
        self.recon_weight, self.stochastic = recon_weight, stochastic_encoder
        self.lr_decay_start, self.max_steps = lr_decay_start, max_steps
        if stochastic_encoder:  # mean and log-std per latent channel
            self.encoder = Encoder(self.in_channels, 2 * self.spec.latent_channels, self.spec)

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if not self.stochastic:
            return self.encoder(x), None
        mean, log_std = self.encoder(x).chunk(2, dim=1)
        return mean, log_std.clamp(-15.0, 5.0).exp()

    def encode_sample(self, x: torch.Tensor) -> torch.Tensor:
        """The z that D sees paired with x: E(x), or a reparameterised sample of ALI's q(z | x)."""
        mean, std = self.encode_distribution(x)
        return mean if std is None else mean + std * normal_like(mean)

    def training_step(self, batch, batch_idx: int) -> None:
        if self.lr_decay_start is not None:
            f = decay_factor(self.batch_step, self.max_steps, self.lr_decay_start)
            for opt in self.optimizers()[:2]:
                for group in opt.param_groups:
                    group["lr"] = group.setdefault("initial_lr", group["lr"]) * f
        super().training_step(batch, batch_idx)

    def build_discriminator(self, cfg: dict) -> torch.nn.Module:
        return build(cfg, in_channels=self.in_channels, image_size=self.image_size, latent_shape=self.latent_shape)

    def generator_parameters(self):
        return [*self.generator.parameters(), *self.encoder.parameters()]

    def discriminator_loss(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            z_hat, x_fake = self.encode_sample(x), self.generator(z)
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
        z_hat = self.encode_sample(x)
        real, fake = self.discriminator(x, z_hat), self.discriminator(self.generator(z), z)
        loss = sum(self.adv_loss.generator(fake[k]) + self.adv_loss.generator(-real[k]) for k in real)
        terms = {"loss": loss}
        if self.recon_weight > 0:
            terms["rec"] = self.pixel_loss(self.generator(z_hat), x)
            terms["loss"] = loss + self.recon_weight * terms["rec"]
        return terms
