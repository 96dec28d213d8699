"""Reconstruction quality on a held-out split: MSE, PSNR, SSIM, chroma; the per-dataset fidelity check."""

from __future__ import annotations

from typing import Optional, Sequence

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


def chroma(images: torch.Tensor) -> torch.Tensor:
    """Per-image mean chroma, max(R, G, B) - min(R, G, B) on the 0..255 scale, of RGB images in [-1, 1]."""
    rgb = (images.clamp(-1, 1) + 1) * 127.5
    return (rgb.max(1).values - rgb.min(1).values).flatten(1).mean(1)


def fidelity_warnings(metrics: dict, check: Optional[dict], latent_shape: Sequence[int], image_size: int) -> list[str]:
    """Warnings for reconstructions that lose colour or detail by more than the data config's `recon_check` allows
    (`min_chroma_ratio`: recon/chroma_ratio, RGB only; `min_psnr`: recon/psnr in dB), each naming the knob."""
    check = check or {}
    c, h = int(latent_shape[0]), int(latent_shape[-1])
    shape = f"{'x'.join(map(str, latent_shape))} latent, backbone.latent_channels={c}, backbone.f={image_size // h}"
    out = []
    ratio, floor = metrics.get("recon/chroma_ratio"), check.get("min_chroma_ratio")
    if ratio is not None and floor is not None and ratio < floor:
        out.append(f"reconstructions lose colour: mean chroma {metrics['recon/chroma']:.1f} vs "
                   f"{metrics['recon/chroma_real']:.1f} real (ratio {ratio:.2f} < data.recon_check.min_chroma_ratio="
                   f"{floor}) with the {shape}: raise backbone.latent_channels")
    psnr_, floor = metrics.get("recon/psnr"), check.get("min_psnr")
    if psnr_ is not None and floor is not None and psnr_ < floor:
        out.append(f"reconstructions lose detail: test PSNR {psnr_:.1f} dB < data.recon_check.min_psnr={floor} with "
                   f"the {shape}: raise backbone.latent_channels or lower backbone.f (or train stage 1 longer)")
    return out
