"""Deterministic autoencoder, reconstruction loss only (Hinton & Salakhutdinov, 2006): the VAE without KL or noise."""

from __future__ import annotations

import torch

from ldm.autoencoders.base import Autoencoder
from ldm.nets.backbone import BackboneSpec
from ldm.nets.decoder import Decoder
from ldm.nets.encoder import Encoder
from ldm.utils.config import build


class AE(Autoencoder):
    """loss = recon(x, D(E(x))), summed per image; nothing pulls the latent towards N(0, I)."""

    def __init__(self, *, backbone: dict, image_size: int, in_channels: int, recon_loss: dict, optimizer: dict,
                 num_vis: int) -> None:
        super().__init__(image_size=image_size, in_channels=in_channels, optimizer=optimizer, num_vis=num_vis)
        self.save_hyperparameters()
        self.spec = BackboneSpec(**backbone)
        self._latent_shape = self.spec.latent_shape(image_size)
        self.encoder = Encoder(in_channels, self.spec.latent_channels, self.spec)
        self.decoder = Decoder(self.spec.latent_channels, in_channels, self.spec)
        self.recon_loss = build(recon_loss)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self._latent_shape

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.encoder(x), None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def losses(self, x: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        x_hat = self.decode(self.encode(x))
        rec = self.recon_loss(x_hat, x)
        return {"loss": rec, "rec": rec, "x_hat": x_hat}
