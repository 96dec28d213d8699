"""Reconstruction quality on a held-out split: MSE, PSNR, SSIM."""

from __future__ import annotations

from typing import Callable

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


@torch.no_grad()
def apply_batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device | str = "cpu",
                  batch_size: int = 256) -> torch.Tensor:
    """`fn` over `x` in batches on `device`; the float results concatenated on the CPU."""
    return torch.cat([fn(x[i:i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def reconstruct_all(reconstruct: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                    batch_size: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """Clamped reconstructions of `images`, computed in batches, on the CPU."""
    return apply_batched(reconstruct, images, device, batch_size).clamp(-1, 1)


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2); x_hat is clamped to that range first."""
    mse = (x_hat.clamp(-1, 1) - x).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-12))


def reconstruction_metrics(x_hat: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    """MSE (on [-1, 1]), mean per-image PSNR (dB, peak-to-peak 2) and SSIM (on [0, 1]) of x_hat vs x."""
    if x_hat.shape != x.shape:
        raise ValueError(f"shape mismatch: {tuple(x_hat.shape)} vs {tuple(x.shape)}")
    mse_per = (x_hat - x).pow(2).flatten(1).mean(1)
    psnr_per = psnr(x_hat, x)
    kernel = min(11, x.shape[-1] - (1 - x.shape[-1] % 2))  # odd, no larger than the image
    ssim = structural_similarity_index_measure((x_hat + 1) / 2, (x + 1) / 2, data_range=1.0, kernel_size=kernel)
    return {"mse": mse_per.mean().item(), "psnr": psnr_per.mean().item(), "ssim": float(ssim)}
