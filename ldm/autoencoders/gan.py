"""GANs on the shared decoder backbone: the plain GAN (a generator and a discriminator, no encoder; Goodfellow et al.,
2014) and `EncodedGAN`, the base of the rows that add an encoder."""

from __future__ import annotations

from typing import Optional

import torch

from ldm.autoencoders.base import Autoencoder, LatentModel
from ldm.errors import NoEncoderError
from ldm.losses import r1_penalty
from ldm.nets.backbone import BackboneSpec
from ldm.nets.decoder import Decoder
from ldm.nets.encoder import Encoder
from ldm.utils.config import build, build_optimizer


class GAN(LatentModel):
    """G(z) = Decoder(z), z ~ N(0, I) of the VAE's latent shape; D, the loss and R1 come from config.

    Each batch takes one discriminator step, then one generator step. `val/loss` is the generator
    loss on fixed prior samples (lower: G fools the current D more), a within-run signal only;
    `EncodedGAN` rows report the pixel reconstruction loss instead. A GAN is not an `Autoencoder`.
    """

    plateau_signal = False  # neither loss tracks sample quality (BiGAN's G(E(x)) error is not trained): to the cap

    def __init__(self, *, backbone: dict, image_size: int, in_channels: int, discriminator: dict, adv_loss: dict,
                 recon_loss: dict, r1_gamma: float, tanh: bool, optimizer: dict, disc_optimizer: dict,
                 grad_clip: Optional[float], num_vis: int) -> None:
        super().__init__(image_size=image_size, in_channels=in_channels, optimizer=optimizer, num_vis=num_vis)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.spec = BackboneSpec(**backbone)
        self._latent_shape = self.spec.latent_shape(image_size)
        self.generator = Decoder(self.spec.latent_channels, in_channels, self.spec, tanh=tanh)
        self.discriminator = self.build_discriminator(discriminator)
        self.adv_loss = build(adv_loss)
        self.pixel_loss = build(recon_loss)  # val/loss of the rows that encode; BiGAN's and GAN inversion's pixel terms
        self.r1_gamma, self.grad_clip = r1_gamma, grad_clip
        self.disc_optimizer_cfg = disc_optimizer

    def build_discriminator(self, cfg: dict) -> torch.nn.Module:
        return build(cfg, in_channels=self.in_channels, image_size=self.image_size)

    # ---- the interface ---------------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self._latent_shape

    @classmethod
    def missing_encoder(cls) -> NoEncoderError:
        return NoEncoderError(
            "autoencoder=gan has no encoder, so it cannot map images to latents (needed for the latent cache and "
            "reconstruction metrics): use autoencoder=bigan (an encoder trained jointly with the generator) or "
            "autoencoder=gan_inversion (an encoder trained to invert the generator), or stage=stage1")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    # ---- training --------------------------------------------------------------------------------
    def generator_parameters(self):
        """What the generator optimizer moves (BiGAN adds its encoder)."""
        return self.generator.parameters()

    def configure_optimizers(self):
        return [build_optimizer(self.optimizer_cfg, self.generator_parameters()),
                build_optimizer(self.disc_optimizer_cfg, self.discriminator.parameters())]

    def discriminator_loss(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Real x against G(z); R1 on the real batch when r1_gamma > 0 (and gradients are on)."""
        r1 = self.r1_gamma > 0 and torch.is_grad_enabled()
        if r1:
            x = x.detach().requires_grad_(True)
        real, fake = self.discriminator(x), self.discriminator(self.generator(z).detach())
        terms = {"loss": self.adv_loss.discriminator(real, fake),
                 "logits_real": real.mean(), "logits_fake": fake.mean()}
        if r1:
            terms["r1"] = r1_penalty(real, x)
            terms["loss"] = terms["loss"] + 0.5 * self.r1_gamma * terms["r1"]
        return terms

    def generator_loss(self, x: torch.Tensor, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss": self.adv_loss.generator(self.discriminator(self.generator(z)))}

    def gan_step(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator step, then one generator step, each on fresh prior samples."""
        opt_g, opt_d = self.optimizers()[:2]
        d = self.optimize(opt_d, lambda: self.discriminator_loss(x, self.prior_noise(len(x))), "d_loss", self.grad_clip)
        g = self.optimize(opt_g, lambda: self.generator_loss(x, self.prior_noise(len(x))), "g_loss", self.grad_clip)
        return {"d_loss": d.pop("loss"), **d, "g_loss": g.pop("loss"), **g}

    def training_step(self, batch, batch_idx: int) -> None:
        x, _ = batch
        self.log_terms(self.gan_step(x), len(x))

    def log_terms(self, terms: dict[str, torch.Tensor], batch_size: int, prog_key: str = "g_loss") -> None:
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=batch_size)
        self.log("loss", terms[prog_key], prog_bar=True, logger=False, batch_size=batch_size)

    def validation_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        z = self.prior_noise(len(x), seed=0)  # the same z at every validation: changes are the model's
        d, g = self.discriminator_loss(x, z), self.generator_loss(x, z)
        terms = {"g_loss": g.pop("loss"), "d_loss": d.pop("loss"), **d, **g}
        terms["loss"] = terms["g_loss"]
        return terms


class EncodedGAN(GAN, Autoencoder):
    """A GAN with an encoder E(x) on the shared backbone (BiGAN, GAN inversion): an `Autoencoder`, whose
    `val/loss` is the pixel loss of G(E(x)), as for every row that reconstructs."""

    def __init__(self, **gan) -> None:
        super().__init__(**gan)
        self.encoder = Encoder(self.in_channels, self.spec.latent_channels, self.spec)

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.encoder(x), None

    def validation_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = super().validation_loss(x)
        terms["rec"] = terms["loss"] = self.pixel_loss(self.reconstruct(x), x)
        return terms
