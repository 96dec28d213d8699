"""Small loss callables: pixel and KL losses sum per image and average over the batch; GAN losses average logits."""

from ldm.losses.adversarial import HingeLoss, NonSaturatingLoss, adaptive_weight, r1_penalty
from ldm.losses.kl import gaussian_kl
from ldm.losses.reconstruction import PixelLoss

__all__ = ["gaussian_kl", "PixelLoss", "HingeLoss", "NonSaturatingLoss", "adaptive_weight", "r1_penalty"]
