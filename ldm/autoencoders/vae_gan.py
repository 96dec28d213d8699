"""The latent-diffusion first stage: KL-VAE + PatchGAN hinge loss (Esser et al., 2021; Rombach et al., 2022)."""

from __future__ import annotations

import itertools
import logging
from typing import Optional

import torch

from ldm.autoencoders.vae import VAE
from ldm.losses import adaptive_weight
from ldm.metrics.reconstruction import psnr
from ldm.utils.config import build, build_optimizer

log = logging.getLogger(__name__)


class VAEGAN(VAE):
    """loss = L1 + [perceptual] + kl_weight * KL + lambda * disc_weight * L_adv, lambda = adaptive weight.

    lambda = ||grad L_rec|| / (||grad L_adv|| + 1e-4) at the decoder's last layer balances the two
    terms whatever their scales. Before `disc_start` (a fraction of the stage budget `max_steps`, in
    batches) neither the adversarial term nor the discriminator's training runs: this is the VAE.
    """

    def __init__(self, *, backbone: dict, image_size: int, in_channels: int, kl_weight: float, recon_loss: dict,
                 discriminator: dict, adv_loss: dict, disc_weight: float, disc_start_fraction: float, max_steps: int,
                 perceptual_loss: Optional[dict], perceptual_weight: float, optimizer: dict, disc_optimizer: dict,
                 grad_clip: Optional[float], num_vis: int, logvar_init: Optional[float]) -> None:
        super().__init__(backbone=backbone, image_size=image_size, in_channels=in_channels, kl_weight=kl_weight,
                         recon_loss=recon_loss, optimizer=optimizer, num_vis=num_vis)
        self.automatic_optimization = False
        self.discriminator = build(discriminator, in_channels=in_channels, image_size=image_size)
        self.adv_loss = build(adv_loss)
        self.disc_weight, self.grad_clip = disc_weight, grad_clip
        self.disc_start = round(disc_start_fraction * max_steps)
        self.disc_optimizer_cfg = disc_optimizer
        # A hook for LPIPS-like losses; off by default (no pretrained weights offline). Frozen, never optimised.
        self.perceptual = build(perceptual_loss) if perceptual_loss else None
        if isinstance(self.perceptual, torch.nn.Module):
            self.perceptual.requires_grad_(False).eval()
        self.perceptual_weight = perceptual_weight
        # LDM's learned output log-variance (LPIPSWithDiscriminator): nll = rec / exp(logvar) + logvar per pixel
        self.logvar = torch.nn.Parameter(torch.tensor(float(logvar_init))) if logvar_init is not None else None
        rf = getattr(self.discriminator, "receptive_field", None)
        if rf is not None:
            log.info("PatchGAN receptive field: %d px of a %d px image%s", rf, image_size,
                     "" if rf < image_size else " (each patch logit sees the whole image: not local)")

    def configure_optimizers(self):
        ae_params = itertools.chain(self.encoder.parameters(), self.decoder.parameters(),
                                    [self.logvar] if self.logvar is not None else [])
        return [build_optimizer(self.optimizer_cfg, ae_params),
                build_optimizer(self.disc_optimizer_cfg, self.discriminator.parameters())]

    def losses(self, x: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        terms = super().losses(x, sample)
        if self.perceptual is not None:
            p = self.perceptual(terms["x_hat"], x)
            terms.update(loss=terms["loss"] + self.perceptual_weight * p, perceptual=p)
        if self.logvar is not None:  # the reconstruction terms as a Gaussian/Laplace NLL with a learned scale
            rec = terms["rec"] + self.perceptual_weight * terms.get("perceptual", 0.0)
            nll = rec / self.logvar.exp() + self.logvar * x[0].numel()
            terms.update(loss=terms["loss"] - rec + nll, nll=nll, logvar=self.logvar.detach())
        return terms

    def autoencoder_loss(self, x: torch.Tensor, adversarial: bool) -> dict[str, torch.Tensor]:
        """The encoder/decoder objective; the adversarial term only once the discriminator is on."""
        terms = self.losses(x)
        if adversarial:
            # the adaptive weight balances the adversarial term against every reconstruction term
            nll = terms.get("nll", terms["rec"] + self.perceptual_weight * terms.get("perceptual", 0.0))
            g_loss = self.adv_loss.generator(self.discriminator(terms["x_hat"]))
            weight = adaptive_weight(nll, g_loss, self.decoder.last_layer) * self.disc_weight
            terms.update(loss=terms["loss"] + weight * g_loss, g_loss=g_loss, d_weight=weight)
        return terms

    def discriminator_loss(self, x: torch.Tensor, x_hat: torch.Tensor) -> dict[str, torch.Tensor]:
        real, fake = self.discriminator(x), self.discriminator(x_hat.detach())
        return {"loss": self.adv_loss.discriminator(real, fake), "logits_real": real.mean(), "logits_fake": fake.mean()}

    def training_step(self, batch, batch_idx: int) -> None:
        x, _ = batch
        opt_ae, opt_d = self.optimizers()
        adversarial = self.batch_step >= self.disc_start
        terms = self.optimize(opt_ae, lambda: self.autoencoder_loss(x, adversarial), "loss", self.grad_clip)
        x_hat = terms.pop("x_hat")
        terms["psnr"] = psnr(x_hat, x).mean()
        if adversarial:
            d = self.optimize(opt_d, lambda: self.discriminator_loss(x, x_hat), "d_loss", self.grad_clip)
            terms.update(d_loss=d["loss"], logits_real=d["logits_real"], logits_fake=d["logits_fake"])
        self.log_dict({f"train/{k}": v for k, v in terms.items()}, batch_size=len(x))
        self.log("loss", terms["loss"], prog_bar=True, logger=False, batch_size=len(x))

    def validation_loss(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = self.losses(x, sample=False)  # loss = rec + kl_weight * KL (+ perceptual), as in the VAE row
        x_hat = terms.pop("x_hat")
        real, fake = self.discriminator(x), self.discriminator(x_hat)
        terms.update(g_loss=self.adv_loss.generator(fake), d_loss=self.adv_loss.discriminator(real, fake))
        return terms
