"""C4's encoder measures against known answers: cycle correlation of inverse pairs and of input-blind encoders,
probe accuracy of separable and of label-free representations, the identity encoder's probe = the pixel probe."""

from __future__ import annotations

import pytest
import torch

from ldm.metrics.latent import cycle_correlation, probe_accuracy


def _gaussian_classes(n: int, d: int, classes: int, sep: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, d, generator=torch.Generator().manual_seed(99)) * sep
    y = torch.arange(n) % classes
    return centres[y] + torch.randn(n, d, generator=g), y


def test_cycle_correlation_of_an_exact_inverse_pair_is_one():
    w = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))[0]
    decode = lambda z: z.flatten(1) @ w.T * 3.0 + 1.0  # noqa: E731  (affine, invertible)
    encode = lambda x: ((x - 1.0) / 3.0 @ w).reshape(-1, 2, 2, 2)  # noqa: E731
    z = torch.randn(500, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    assert cycle_correlation(encode, decode, z) == pytest.approx(1.0, abs=1e-9)


def test_cycle_correlation_of_an_encoder_that_ignores_its_input_is_about_zero():
    g = torch.Generator().manual_seed(2)
    blind = lambda x: torch.randn(len(x), 4, generator=g)  # noqa: E731
    z = torch.randn(2000, 4, generator=torch.Generator().manual_seed(3))
    assert abs(cycle_correlation(blind, lambda z: z, z)) < 0.05
    constant = lambda x: torch.zeros(len(x), 4)  # noqa: E731  (a collapsed encoder: every dimension constant)
    assert cycle_correlation(constant, lambda z: z, z) == 0.0


def test_probe_reads_separable_classes_and_not_label_free_noise():
    a, ya = _gaussian_classes(600, 16, 10, sep=4.0, seed=0)
    b, yb = _gaussian_classes(300, 16, 10, sep=4.0, seed=1)
    sep = probe_accuracy(a, ya, b, yb)
    assert sep["probe_1nn"] > 0.95 and sep["probe_linear"] > 0.95
    noise = torch.randn(300, 16, generator=torch.Generator().manual_seed(5))  # carries no label
    blind = probe_accuracy(torch.randn(600, 16, generator=torch.Generator().manual_seed(4)), ya, noise, yb)
    assert blind["probe_1nn"] < 0.2 and blind["probe_linear"] < 0.2  # chance is 0.1


def test_identity_encoder_probe_equals_the_pixel_probe():
    """An identity 'encoder' returns the images as latents (the pixel baseline): its probe is the pixel probe."""
    x, y = _gaussian_classes(400, 64, 5, sep=1.0, seed=6)
    images, test = x.reshape(-1, 1, 8, 8), _gaussian_classes(200, 64, 5, sep=1.0, seed=7)
    identity = lambda t: t  # noqa: E731
    latent = probe_accuracy(identity(images), y, identity(test[0].reshape(-1, 1, 8, 8)), test[1])
    pixel = probe_accuracy(x, y, test[0], test[1])
    assert latent == pixel
    assert 0.2 < pixel["probe_linear"] <= 1.0  # above chance (0.2) on overlapping classes: the probe is not trivial
