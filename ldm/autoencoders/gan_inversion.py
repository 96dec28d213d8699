"""GAN inversion: train a GAN, then an encoder for its frozen generator (Zhu et al., 2020, In-Domain GAN Inversion)."""

from __future__ import annotations

from typing import Optional

import torch

from ldm.autoencoders.gan import EncodedGAN
from ldm.utils.config import build, build_optimizer


class GANInversion(EncodedGAN):
    """Stage 1a: the GAN, for the first `gan_fraction` of the `max_steps` batches (one budget shared, the
    matched-batches view), or for all `max_steps` when `encoder_steps` is set (the GAN at the same budget as
    every other row's stage 1, the encoder's `encoder_steps` after it, as in-domain GAN inversion trains them:
    stage 1 then runs max_steps + encoder_steps batches, `extra_steps`). Stage 1b: G and D frozen,

    E minimises latent_weight * ||E(G(z)) - z||^2 on prior samples + pixel_weight * ||G(E(x)) - x||_1 on
    real images. `refine_steps` > 0 then polishes each E(x) at encode time by Adam steps on the pixel loss plus
    `refine_feature_weight` x a feature distance (`refine_features`, e.g. ldm.losses.perceptual.DataFeatureLoss)
    plus `refine_encoder_weight` x ||z - E(G(z))||^2, IDInvert's domain regulariser (the encoder keeps z where the
    generator's domain is); its cost shows in recon/encode_sec_per_image.
    """

    def __init__(self, *, gan_fraction: float, max_steps: int, latent_weight: float, pixel_weight: float,
                 refine_steps: int, refine_lr: float, encoder_optimizer: dict, encoder_steps: Optional[int],
                 refine_feature_weight: float, refine_features: Optional[dict], refine_encoder_weight: float,
                 **gan: dict) -> None:
        """The inversion's own settings and everything the GAN takes (`**gan`)."""
        super().__init__(**gan)
        if encoder_steps is not None and encoder_steps < 1:
            raise ValueError(f"autoencoder.encoder_steps must be >= 1 or null, got {encoder_steps}")
        self.gan_steps = max_steps if encoder_steps else round(gan_fraction * max_steps)
        self.extra_steps = int(encoder_steps or 0)  # batches beyond stage1.max_steps (ldm.run.stages.make_trainer)
        self.latent_weight, self.pixel_weight = latent_weight, pixel_weight
        self.refine_steps, self.refine_lr = refine_steps, refine_lr
        self.refine_feature_weight, self.refine_encoder_weight = refine_feature_weight, refine_encoder_weight
        self.refine_features = build(refine_features) if refine_features and refine_feature_weight else None
        if isinstance(self.refine_features, torch.nn.Module):
            self.refine_features.requires_grad_(False).eval()
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
                (z.grad,) = torch.autograd.grad(self.refine_loss(z, x), z)
                opt.step()
        return z.detach()

    def refine_loss(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """What the refinement minimises: pixel loss of G(z) (+ the weighted feature distance, + the weighted
        domain term ||z - E(G(z))||^2 summed per latent)."""
        x_hat = self.generator(z)
        loss = self.pixel_loss(x_hat, x)
        if self.refine_features is not None:
            loss = loss + self.refine_feature_weight * self.refine_features(x_hat, x)
        if self.refine_encoder_weight:
            loss = loss + self.refine_encoder_weight * self.latent_error(x_hat, z)
        return loss

    def latent_error(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """||E(x) - z||^2 summed per latent, mean over the batch: stage 1b's latent term on x = G(z), and the
        refinement's domain term."""
        return (self.encoder(x) - z).pow(2).flatten(1).sum(1).mean()

    def encoder_loss(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            x_fake = self.generator(z)
        latent = self.latent_error(x_fake, z)
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
