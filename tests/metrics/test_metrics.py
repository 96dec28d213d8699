"""Known answers for the metric functions: PRDC, PSNR/SSIM, latent statistics, interpolation, mode coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ldm.metrics.features import prdc
from ldm.metrics.generation import class_coverage, mode_coverage
from ldm.metrics.latent import cycle_error, gaussian_kl_to_prior, interpolate, latent_summary, path_metrics
from ldm.metrics.reconstruction import chroma, fidelity_warnings, psnr, reconstruction_metrics


def test_prdc_identical_sets_are_perfect():
    x = np.random.default_rng(0).standard_normal((400, 32))
    out = prdc(x, x, k=5)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0


@pytest.mark.slow
def test_prdc_matches_published_values_for_two_gaussian_draws():
    """Naeem et al. (2020): two draws of one 1000-d Gaussian, k=5 give P≈R≈0.48, D≈1.06, C≈0.97.

    Density is heavy-tailed in high dimension (one draw gave 1.21, another 1.04), so average 3 draws;
    measured mean over seeds 0-2 at 5,000 points: P 0.52, R 0.50, D 1.12, C 0.98.
    """
    runs = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        runs.append(prdc(rng.standard_normal((5000, 1000)), rng.standard_normal((5000, 1000)), k=5))
    out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    assert out["precision"] == pytest.approx(0.48, abs=0.06) and out["recall"] == pytest.approx(0.48, abs=0.06)
    assert out["density"] == pytest.approx(1.06, abs=0.1) and out["coverage"] == pytest.approx(0.97, abs=0.02)


def test_psnr_ssim_of_identical_images():
    x = torch.rand(4, 1, 16, 16) * 2 - 1
    m = reconstruction_metrics(x.clone(), x)
    assert m["mse"] == 0 and m["ssim"] == pytest.approx(1.0, abs=1e-6) and m["psnr"] > 100


def test_psnr_of_known_perturbation():
    x = torch.zeros(3, 1, 8, 8)
    # a constant offset of 0.1 on a peak-to-peak range of 2: PSNR = 10 log10(2^2 / 0.01) = 26.02 dB
    assert psnr(x + 0.1, x).tolist() == pytest.approx([10 * math.log10(4 / 0.01)] * 3, rel=1e-5)
    m = reconstruction_metrics(x + 0.1, x)
    assert m["mse"] == pytest.approx(0.01, rel=1e-5) and m["ssim"] < 1


def test_kl_to_prior_known_values():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(200_000, 1, 1, 2, generator=g)
    assert gaussian_kl_to_prior(z) == pytest.approx(0.0, abs=1e-3)
    # N(1, 2^2) per dim: 0.5 (1 + 4 - 1 - log 4)
    assert gaussian_kl_to_prior(1 + 2 * z) == pytest.approx(0.5 * (4 - math.log(4)), rel=1e-2)


def test_latent_summary_channels():
    g = torch.Generator().manual_seed(0)
    z = torch.stack([torch.zeros(5000, 2, 2) + 3, -1 + 2 * torch.randn(5000, 2, 2, generator=g)], 1)
    s = latent_summary(z, scaled=z / 2)
    assert s["raw_ch0_mean"] == pytest.approx(3.0) and s["raw_ch0_std"] == 0.0
    assert s["raw_ch1_mean"] == pytest.approx(-1.0, abs=0.05) and s["raw_ch1_std"] == pytest.approx(2.0, rel=0.02)
    assert s["scaled_ch1_mean"] == pytest.approx(-0.5, abs=0.03) and s["scaled_ch1_std"] == pytest.approx(1.0, rel=0.02)
    assert "raw_ch2_mean" not in s  # exactly one entry per channel


def test_cycle_error_of_a_consistent_pair_is_zero():
    z = torch.randn(10, 2, 4, 4)
    assert cycle_error(lambda x: x / 2, lambda z: 2 * z, z) == pytest.approx(0.0, abs=1e-6)
    assert cycle_error(lambda x: x / 4, lambda z: 2 * z, z) == pytest.approx(0.5, rel=1e-5)


def _decoders():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(0))

    def smooth(z):
        return (z.flatten(1) @ w).view(-1, 1, 8, 8)

    def jumpy(z):  # a cliff half-way along the first latent coordinate
        return smooth(z) + 5.0 * (z.flatten(1)[:, :1] > 0).float().view(-1, 1, 1, 1)

    return smooth, jumpy


def test_interpolation_smooth_decoder_beats_one_with_a_jump():
    smooth, jumpy = _decoders()
    z_a = torch.full((6, 4, 1, 1), -1.0) + 0.1 * torch.randn(6, 4, 1, 1)
    z_b = torch.full((6, 4, 1, 1), 1.0) + 0.1 * torch.randn(6, 4, 1, 1)
    features = lambda x: x.flatten(1)  # noqa: E731
    s = path_metrics(features, interpolate(smooth, z_a, z_b, steps=16))
    j = path_metrics(features, interpolate(jumpy, z_a, z_b, steps=16))
    assert s["interp_uniformity"] == pytest.approx(1.0, abs=1e-6)  # linear decoder: equal steps
    assert j["interp_uniformity"] > 3 and j["interp_ppl"] > s["interp_ppl"]


def test_interpolation_frames_shape_and_endpoints():
    smooth, _ = _decoders()
    z_a, z_b = torch.randn(3, 4, 1, 1), torch.randn(3, 4, 1, 1)
    frames = interpolate(smooth, z_a, z_b, steps=5)
    assert frames.shape == (3, 6, 1, 8, 8)
    assert torch.allclose(frames[:, 0], smooth(z_a), atol=1e-5)
    assert torch.allclose(frames[:, -1], smooth(z_b), atol=1e-5)


def test_mode_coverage_one_class_missing():
    labels = torch.tensor([c for c in range(10) if c != 3] * 20)
    probs = torch.nn.functional.one_hot(labels, 10).double() * 0.9 + 0.01
    out = class_coverage(probs)
    assert out["classes_covered"] == 9
    assert out["class_kl"] == pytest.approx(math.log(10 / 9), rel=1e-6)  # uniform over 9 of 10
    assert out["confidence"] == pytest.approx(0.91)
    uniform = class_coverage(torch.nn.functional.one_hot(torch.arange(100) % 10, 10).double())
    assert uniform["classes_covered"] == 10 and uniform["class_kl"] == pytest.approx(0.0, abs=1e-12)


def test_half_share_threshold():
    # 10 classes, 100 samples: class 0 gets 5 (exactly half its share: covered), class 1 gets 4 (not)
    labels = torch.tensor([0] * 5 + [1] * 4 + [c for c in range(2, 10) for _ in range(91 // 8)] + [2] * 3)
    assert len(labels) == 100
    assert class_coverage(torch.nn.functional.one_hot(labels, 10).double())["classes_covered"] == 9


def test_mode_coverage_counts_a_mode_with_one_sample():
    """VEEGAN/PacGAN: one sample covers a mode (class_coverage asks for half the uniform share)."""
    pred = torch.tensor([0] * 97 + [1, 2, 3])
    cov = mode_coverage(pred, 10)
    assert cov["modes_covered"] == 4 and cov["num_modes"] == 10
    assert class_coverage(torch.nn.functional.one_hot(pred, 10).double())["classes_covered"] == 1
    assert mode_coverage(torch.arange(10), 10)["mode_kl"] == pytest.approx(0.0, abs=1e-12)


def test_chroma_and_the_fidelity_check_name_the_knob():
    grey = torch.zeros(2, 3, 4, 4)
    red = -torch.ones(2, 3, 4, 4)
    red[:, 0] = 1.0  # (255, 0, 0)
    assert chroma(grey).tolist() == [0.0, 0.0] and chroma(red).tolist() == [255.0, 255.0]
    check = {"min_chroma_ratio": 0.7, "min_psnr": 18.0}
    ok = {"recon/psnr": 25.0, "recon/chroma": 30.0, "recon/chroma_real": 40.0, "recon/chroma_ratio": 0.75}
    assert fidelity_warnings(ok, check, (2, 8, 8), 32) == [] and fidelity_warnings(ok, None, (2, 8, 8), 32) == []
    washed = {**ok, "recon/psnr": 15.0, "recon/chroma": 15.0, "recon/chroma_ratio": 0.375}
    colour, detail = fidelity_warnings(washed, check, (2, 8, 8), 32)
    assert "lose colour" in colour and "15.0 vs 40.0" in colour and "backbone.latent_channels" in colour
    assert "lose detail" in detail and "backbone.f=4" in detail and "lower backbone.f" in detail
    assert fidelity_warnings({"recon/psnr": 15.0}, check, (2, 4, 4), 16)[0].startswith("reconstructions lose detail")
