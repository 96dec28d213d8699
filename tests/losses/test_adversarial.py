"""GAN losses, R1 and the adaptive weight against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ldm.losses import HingeLoss, NonSaturatingLoss, adaptive_weight, r1_penalty

REAL = torch.tensor([2.0, 0.5, -1.0])
FAKE = torch.tensor([-3.0, 0.0, 0.5])


def softplus(t: float) -> float:
    return math.log1p(math.exp(t))


def test_hinge_known_values():
    # D: 0.5 * (mean relu(1 - real) + mean relu(1 + fake)) = 0.5 * ((0 + .5 + 2) / 3 + (0 + 1 + 1.5) / 3)
    assert HingeLoss().discriminator(REAL, FAKE).item() == pytest.approx(0.5 * (2.5 / 3 + 2.5 / 3))
    # G: -mean fake
    assert HingeLoss().generator(FAKE).item() == pytest.approx(2.5 / 3)


def test_non_saturating_known_values():
    d = 0.5 * (sum(softplus(-r) for r in REAL.tolist()) / 3 + sum(softplus(f) for f in FAKE.tolist()) / 3)
    assert NonSaturatingLoss().discriminator(REAL, FAKE).item() == pytest.approx(d, rel=1e-6)
    g = sum(-math.log(1 / (1 + math.exp(-f))) for f in FAKE.tolist()) / 3  # -log sigmoid(fake)
    assert NonSaturatingLoss().generator(FAKE).item() == pytest.approx(g, rel=1e-6)


def test_losses_average_patch_logits():
    # a (N, 1, h, w) patch map counts every patch equally, as in taming's PatchGAN
    patches = torch.tensor([[[[1.0, 3.0]]], [[[-1.0, -3.0]]]])
    assert HingeLoss().generator(patches).item() == 0.0
    # relu(1 - real) = relu(1 + fake) = [0, 0, 2, 4] over the 4 patches: 0.5 * (1.5 + 1.5)
    assert HingeLoss().discriminator(patches, -patches).item() == pytest.approx(1.5)


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm():
    w = torch.tensor([[1.0, -2.0, 2.0]])
    x = torch.randn(5, 3, requires_grad=True)
    logits = x @ w.T  # grad_x D = w for every sample
    assert r1_penalty(logits, x).item() == pytest.approx(9.0)


def test_r1_sums_over_inputs():
    x, z = torch.randn(4, 2, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    logits = 2 * x.sum(1) + 3 * z.sum(1)  # ||grad_x||^2 = 2 * 4, ||grad_z||^2 = 3 * 9
    assert r1_penalty(logits, x, z).item() == pytest.approx(8 + 27)


def test_adaptive_weight_known_ratio():
    # y = w * 3: d(sum y)/dw = 3, d(2 sum y)/dw = 6 -> 3 / (6 + 1e-4)
    w = nn.Parameter(torch.tensor([1.0]))
    y = w * 3.0
    assert adaptive_weight(y.sum(), 2 * y.sum(), w).item() == pytest.approx(3 / (6 + 1e-4), rel=1e-6)


def test_adaptive_weight_is_the_grad_norm_ratio_on_a_toy_decoder():
    torch.manual_seed(0)
    decoder = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.SiLU(), nn.Conv2d(8, 1, 3, padding=1))
    last = decoder[2].weight
    x, z = torch.randn(4, 1, 8, 8), torch.randn(4, 2, 8, 8)
    out = decoder(z)
    rec = (out - x).abs().flatten(1).sum(1).mean()
    adv = -(out * torch.randn_like(out)).mean()
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0]
    w = adaptive_weight(rec, adv, last)
    assert w.item() == pytest.approx((g_rec.norm() / (g_adv.norm() + 1e-4)).item(), rel=1e-6)
    assert not w.requires_grad
    # the graph is kept: the caller still backpropagates the weighted sum
    (rec + w * adv).backward()
    assert decoder[0].weight.grad is not None


def test_adaptive_weight_is_clamped():
    w = nn.Parameter(torch.tensor([1.0]))
    y = w * 3.0
    zero_grad_adv = (w * 0.0).sum()  # ||grad adv|| = 0 -> 3 / 1e-4 = 3e4, clamped to 1e4
    assert adaptive_weight(y.sum(), zero_grad_adv, w).item() == pytest.approx(1e4)
