"""No autoencoder: pixel-space diffusion through the same code path (the baseline row)."""

from __future__ import annotations

import torch

from ldm.autoencoders.base import Autoencoder


class Identity(Autoencoder):
    """encode(x) = x, decode(z) = z; nothing to train, so the pipeline skips stage-1 fitting."""

    pixel_space = True
    latent_range = (-1.0, 1.0)  # the latents are the pixels: pixel-space diffusion clips x0 to it (clip_x0)

    def __init__(self, image_size: int, in_channels: int, num_vis: int) -> None:
        super().__init__(image_size=image_size, in_channels=in_channels, num_vis=num_vis)
        self.save_hyperparameters()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)

    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z
