"""GAN inversion: train a GAN, then an encoder for its frozen generator (Zhu et al., 2020, In-Domain GAN Inversion)."""

from __future__ import annotations

import torch

from ldm.autoencoders.gan import EncodedGAN
from ldm.utils.config import build_optimizer


class GANInversion(EncodedGAN):
    """Stage 1a (first `gan_fraction` of the `max_steps` batches): the GAN. Stage 1b: G and D frozen,

    E minimises latent_weight * ||E(G(z)) - z||^2 on prior samples + pixel_weight * ||G(E(x)) - x||_1 on
    real images. `refine_steps` > 0 then polishes each E(x) at encode time by Adam steps on the pixel loss
    (IDInvert's domain-regularised refinement without its perceptual and encoder terms).
    """

    def __init__(self, *, gan_fraction: float, max_steps: int, latent_weight: float, pixel_weight: float,
                 refine_steps: int, refine_lr: float, encoder_optimizer: dict, **gan: dict) -> None:
        """The inversion's own settings and everything the GAN takes (`**gan`)."""
        super().__init__(**gan)
        self.gan_steps = round(gan_fraction * max_steps)
        self.latent_weight, self.pixel_weight = latent_weight, pixel_weight
        self.refine_steps, self.refine_lr = refine_steps, refine_lr
        self.encoder_optimizer_cfg = encoder_optimizer

    def configure_optimizers(self):
        return [*super().configure_optimizers(), build_optimizer(self.encoder_optimizer_cfg, self.encoder.parameters())]

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        z, _ = super().encode_distribution(x)
        return (self.refine(x, z) if self.refine_steps > 0 else z), None

    def refine(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Per-image latent optimisation started at E(x); grads only w.r.t. z, so G's weights are untouched."""
        with torch.enable_grad():  # encode is called under no_grad by evaluation code
            z = z.detach().clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=self.refine_lr)
            for _ in range(self.refine_steps):
                (z.grad,) = torch.autograd.grad(self.pixel_loss(self.generator(z), x), z)
                opt.step()
        return z.detach()

    def encoder_loss(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            x_fake = self.generator(z)
        latent = (self.encoder(x_fake) - z).pow(2).flatten(1).sum(1).mean()
        rec = self.pixel_loss(self.generator(self.encoder(x)), x)  # G frozen by the toggle: only E moves
        return {"loss": self.latent_weight * latent + self.pixel_weight * rec, "latent": latent, "rec": rec}

    def training_step(self, batch, batch_idx: int) -> None:
        x, _ = batch
        if self.batch_step < self.gan_steps:
            self.log_terms(self.gan_step(x), len(x))
            return
        opt_e = self.optimizers()[2]
        terms = self.optimize(opt_e, lambda: self.encoder_loss(x, self.prior_noise(len(x))), "e_loss", self.grad_clip)
        self.log_terms({"e_loss": terms.pop("loss"), **terms}, len(x), prog_key="e_loss")

    def validation_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().validation_loss(x)  # loss = pixel loss of G(E(x)), as for every row that encodes
        z = self.prior_noise(len(x), seed=1)
        terms["latent"] = (self.encoder(self.generator(z)) - z).pow(2).flatten(1).sum(1).mean()
        return terms
