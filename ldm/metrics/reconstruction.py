"""Reconstruction quality on a held-out split: MSE, PSNR, SSIM."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2); x_hat is clamped to that range first."""
    mse = (x_hat.clamp(-1, 1) - x).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def per_image_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image MSE (on [-1, 1]), PSNR (dB, peak-to-peak 2) and SSIM (on [0, 1]) of x_hat vs x, each (N,)."""
    if x_hat.shape != x.shape:
        raise ValueError(f"shape mismatch: {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    kernel = min(11, x.shape[-1] - (1 - x.shape[-1] % 2))  # odd, no larger than the image
    ssim = structural_similarity_index_measure((x_hat + 1) / 2, (x + 1) / 2, data_range=1.0, kernel_size=kernel,
                                               reduction="none")
    return {"mse": (x_hat - x).pow(2).flatten(1).mean(1), "psnr": psnr(x_hat, x), "ssim": ssim.reshape(len(x))}


def reconstruction_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """The means over images of `per_image_metrics`."""
    return {k: v.double().mean().item() for k, v in per_image_metrics(x_hat, x).items()}
