"""GAN losses as small callables on discriminator logits; the discriminator itself belongs to the module.

Each loss object has `discriminator(real, fake)` and `generator(fake)`, so a config picks one by
`_target_`. Discriminator losses carry taming-transformers' factor 0.5 (Esser et al., 2021).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


class HingeLoss:
    """Hinge GAN loss (Lim & Ye, 2017; Miyato et al., 2018): D: relu(1 - real) + relu(1 + fake); G: -fake."""

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean())

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        return -fake.mean()

    def __repr__(self) -> str:
        return "HingeLoss()"


class NonSaturatingLoss:
    """Non-saturating GAN loss (Goodfellow et al., 2014): D: -log s(real) - log(1 - s(fake)); G: -log s(fake)."""

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        return F.softplus(-fake).mean()

    def __repr__(self) -> str:
        return "NonSaturatingLoss()"


def r1_penalty(real_logits: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
    """R1 = E ||grad D||^2 on real data (Mescheder et al., 2018), w.r.t. every input (x, or BiGAN's x and z)."""
    grads = torch.autograd.grad(real_logits.sum(), inputs, create_graph=True)
    return sum(g.pow(2).flatten(1).sum(1) for g in grads).mean()


def adaptive_weight(rec_loss: torch.Tensor, adv_loss: torch.Tensor, last_layer: torch.Tensor,
                    eps: float = 1e-4, max_weight: float = 1e4) -> torch.Tensor:
    """||grad rec|| / (||grad adv|| + eps) at the decoder's last layer, clamped, detached (Esser et al., 2021)."""
    (g_rec,) = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)
    (g_adv,) = torch.autograd.grad(adv_loss, last_layer, retain_graph=True)
    return (g_rec.norm() / (g_adv.norm() + eps)).clamp(0.0, max_weight).detach()
