"""Latent-space structure: marginal statistics, distance to the prior, interpolation smoothness, cycle error."""

from __future__ import annotations

from typing import Callable, Optional

import torch


def channel_stats(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of latents (N, C, h, w)."""
    flat = z.transpose(0, 1).reshape(z.shape[1], -1).double()
    return flat.mean(1), flat.std(1)


def gaussian_kl_to_prior(z: torch.Tensor) -> float:
    """Mean over latent dimensions of KL(N(m_d, v_d) || N(0, 1)), each marginal fitted by its moments."""
    flat = z.flatten(1).double()
    m, v = flat.mean(0), flat.var(0).clamp_min(1e-12)
    return float((0.5 * (m ** 2 + v - 1 - v.log())).mean())


@torch.no_grad()
def interpolate(decode: Callable, z_a: torch.Tensor, z_b: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """Decoded K-step linear interpolations between latent pairs: (M, K + 1, C, H, W)."""
    if steps < 2:
        raise ValueError("interpolation needs at least 2 steps")
    ts = torch.linspace(0, 1, steps + 1, dtype=z_a.dtype, device=z_a.device)
    path = torch.stack([(1 - t) * z_a + t * z_b for t in ts], 1)  # (M, K+1, C, h, w)
    images = decode(path.flatten(0, 1))
    return images.reshape(len(z_a), steps + 1, *images.shape[1:])


@torch.no_grad()
def path_metrics(features: Callable, frames: torch.Tensor) -> dict[str, float]:
    """Consecutive-frame feature distances along interpolation paths (M, K + 1, C, H, W).

    interp_ppl: mean over paths and steps of ||f(x_{k+1}) - f(x_k)||^2 / eps^2 with eps = 1/K (PPL-style,
    Karras et al., 2019). interp_uniformity: max step / mean step per path, averaged (1 = evenly spaced;
    large = a jump on the way, i.e. a hole or discontinuity in the latent space).
    """
    m, k1 = frames.shape[:2]
    f = features(frames.flatten(0, 1)).double().reshape(m, k1, -1)
    d = (f[:, 1:] - f[:, :-1]).norm(dim=-1)  # (M, K)
    eps = 1.0 / (k1 - 1)
    return {"interp_ppl": float((d ** 2).mean() / eps ** 2),
            "interp_uniformity": float((d.max(1).values / d.mean(1).clamp_min(1e-12)).mean())}


@torch.no_grad()
def cycle_error(encode: Callable, decode: Callable, z: torch.Tensor) -> float:
    """Mean relative error ||E(D(z)) - z|| / ||z||: does the encoder find the latent its decoder was given?"""
    z2 = encode(decode(z))
    return float(((z2 - z).flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1).clamp_min(1e-12)).mean())


def latent_summary(raw: torch.Tensor, scaled: Optional[torch.Tensor] = None) -> dict[str, float]:
    """Flat metric dict: overall std, per-channel raw (and scaled) mean/std, KL of scaled marginals to N(0, I)."""
    scaled = raw if scaled is None else scaled
    out = {"std": float(raw.double().std()), "scaled_std": float(scaled.double().std()),
           "kl_to_prior": gaussian_kl_to_prior(scaled)}
    for name, z in (("raw", raw), ("scaled", scaled)):
        mean, std = channel_stats(z)
        for c in range(len(mean)):
            out[f"{name}_ch{c}_mean"], out[f"{name}_ch{c}_std"] = float(mean[c]), float(std[c])
    return out
