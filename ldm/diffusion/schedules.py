"""Beta schedules: each returns a float64 tensor of T betas (select one by `_target_`)."""

from __future__ import annotations

import math

import torch


def linear(timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2) -> torch.Tensor:
    """Linear betas (Ho et al., 2020)."""
    return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)


def scaled_linear(timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Linear in sqrt(beta), the latent-diffusion schedule (Rombach et al., 2022)."""
    return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, timesteps, dtype=torch.float64) ** 2


def cosine(timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine alpha-bar schedule (Nichol & Dhariwal, 2021)."""
    f = lambda t: math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(timesteps)]
    return torch.tensor(betas, dtype=torch.float64)


def vp(timesteps: int = 4, beta_min: float = 0.1, beta_max: float = 20.0, eps: float = 1e-3) -> torch.Tensor:
    """The variance-preserving SDE's schedule sampled at `timesteps` points (Song et al., 2021), as Denoising
    Diffusion GANs use it with 2-8 large steps (Xiao et al., 2022, appendix; released code's get_sigma_schedule:
    t_i = eps + (1 - eps) i / T, var(t) = 1 - exp(-t beta_min - t^2 (beta_max - beta_min) / 2), alpha-bar = 1 - var,
    beta_i = 1 - alpha-bar_i / alpha-bar_{i-1}). Their first, tiny beta (t = eps) is the clean data here."""
    t = eps + (1 - eps) * torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    abar = torch.exp(-t * beta_min - 0.5 * t ** 2 * (beta_max - beta_min))
    return (1 - abar[1:] / abar[:-1]).clamp(1e-8, 0.999)
