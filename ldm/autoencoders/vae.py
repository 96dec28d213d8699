"""KL-regularised autoencoder with a diagonal Gaussian posterior (Kingma & Welling, 2014; Rombach et al., 2022)."""

from __future__ import annotations

import torch

from ldm.autoencoders.base import Autoencoder
from ldm.losses import gaussian_kl
from ldm.nets.backbone import BackboneSpec
from ldm.nets.decoder import Decoder
from ldm.nets.encoder import Encoder
from ldm.utils.config import build
from ldm.utils.seeds import normal_like


class VAE(Autoencoder):
    """loss = recon(x, D(z)) + kl_weight * KL(q(z|x) || N(0, I)), z ~ q(z|x); both summed per image.

    With per-image sums `kl_weight` means what it means in the literature (1e-6 in latent diffusion).
    """

    def __init__(self, *, backbone: dict, image_size: int, in_channels: int, kl_weight: float, recon_loss: dict,
                 optimizer: dict, num_vis: int) -> None:
        super().__init__(image_size=image_size, in_channels=in_channels, optimizer=optimizer, num_vis=num_vis)
        self.save_hyperparameters()
        self.spec = BackboneSpec(**backbone)
        self._latent_shape = self.spec.latent_shape(image_size)
        self.encoder = Encoder(in_channels, 2 * self.spec.latent_channels, self.spec)
        self.decoder = Decoder(self.spec.latent_channels, in_channels, self.spec)
        self.kl_weight = kl_weight
        self.recon_loss = build(recon_loss)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self._latent_shape

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of q(z|x); logvar clamped as in latent diffusion for stability."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.posterior(x)
        return mean, (0.5 * logvar).exp()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def losses(self, x: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        mean, logvar = self.posterior(x)
        z = mean + (0.5 * logvar).exp() * normal_like(mean) if sample else mean
        x_hat = self.decode(z)
        rec = self.recon_loss(x_hat, x)
        kl = gaussian_kl(mean, logvar).mean()
        return {"loss": rec + self.kl_weight * kl, "rec": rec, "kl": kl, "x_hat": x_hat}
