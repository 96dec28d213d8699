"""Small loss callables; each sums over an image's elements and averages over the batch."""

from ldm.losses.kl import gaussian_kl
from ldm.losses.reconstruction import PixelLoss

__all__ = ["gaussian_kl", "PixelLoss"]
