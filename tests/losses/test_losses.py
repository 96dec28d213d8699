"""KL and pixel losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from ldm.errors import ConfigError
from ldm.losses import PixelLoss, gaussian_kl


def test_kl_of_standard_normal_is_zero():
    mean, logvar = torch.zeros(3, 2, 4, 4), torch.zeros(3, 2, 4, 4)
    assert torch.equal(gaussian_kl(mean, logvar), torch.zeros(3))


def test_kl_closed_form():
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 (mu^2 + s^2 - 1 - log s^2), summed over dims
    mean = torch.tensor([[1.0, -2.0]])
    logvar = torch.tensor([[math.log(4.0), 0.0]])
    expected = 0.5 * (1 + 4 - 1 - math.log(4.0)) + 0.5 * (4 + 1 - 1 - 0)
    assert gaussian_kl(mean, logvar).item() == pytest.approx(expected, rel=1e-6)


def test_kl_matches_torch_distributions():
    mean, logvar = torch.randn(5, 2, 3, 3), torch.randn(5, 2, 3, 3)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mean), torch.ones_like(mean))
    ref = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    assert torch.allclose(gaussian_kl(mean, logvar), ref, atol=1e-5)


def test_pixel_loss_sums_per_image_and_averages_batch():
    x = torch.zeros(2, 1, 2, 2)
    x_hat = torch.stack([torch.full((1, 2, 2), 0.5), torch.full((1, 2, 2), -1.0)])
    assert PixelLoss(p=1)(x_hat, x).item() == pytest.approx((4 * 0.5 + 4 * 1.0) / 2)
    assert PixelLoss(p=2)(x_hat, x).item() == pytest.approx((4 * 0.25 + 4 * 1.0) / 2)


def test_pixel_loss_rejects_other_p():
    with pytest.raises(ConfigError, match="p=3"):
        PixelLoss(p=3)
