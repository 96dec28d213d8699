"""Pixel reconstruction loss, summed per image and averaged over the batch (latent-diffusion convention)."""

from __future__ import annotations

import torch

from ldm.errors import ConfigError


class PixelLoss:
    """Sum over pixels of |x - x_hat|^p (p=1: L1, p=2: squared L2), mean over the batch."""

    def __init__(self, p: int = 1) -> None:
        if p not in (1, 2):
            raise ConfigError(f"PixelLoss p={p}: use p=1 (L1) or p=2 (L2)")
        self.p = p

    def per_image(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        d = (x_hat - x).abs()
        return (d if self.p == 1 else d.pow(2)).flatten(1).sum(1)

    def __call__(self, x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.per_image(x_hat, x).mean()

    def __repr__(self) -> str:
        return f"PixelLoss(p={self.p})"
