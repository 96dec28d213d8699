"""Gaussian diffusion process: q(x_t | x_0), parameterisations and the training loss (network passed in)."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ldm.errors import ConfigError
from ldm.utils.seeds import normal_like

PARAMETERIZATIONS = ("eps", "x0", "v")


class GaussianDiffusion:
    """DDPM forward process over T discrete steps (Ho et al., 2020) with eps / x0 / v prediction
    (Salimans & Ho, 2022) and optional min-SNR-gamma loss weighting (Hang et al., 2023).

    The network is an argument, never an attribute: `loss(model, x0)`, `to_x0_eps(out, x_t, t)`.
    All conversions between parameterisations live here, in `to_x0_eps` and `target`.
    """

    def __init__(self, betas: torch.Tensor, parameterization: str = "eps", min_snr_gamma: Optional[float] = None):
        if parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"parameterization={parameterization!r}: choose one of {', '.join(PARAMETERIZATIONS)}")
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or not ((betas > 0) & (betas < 1)).all():
            raise ConfigError("betas must be a 1-D schedule with every value in (0, 1)")
        self.parameterization, self.min_snr_gamma = parameterization, min_snr_gamma
        self.num_timesteps = len(betas)
        self.betas = betas
        self.alphas_cumprod = torch.cumprod(1 - betas, 0)
        self._cache: dict = {}

    # ---- schedule quantities on the right device/dtype ---------------------------------------------
    def _table(self, name: str, like: torch.Tensor) -> torch.Tensor:
        key = (name, like.device, like.dtype)
        if key not in self._cache:
            ac = self.alphas_cumprod
            table = {"sqrt_ac": ac.sqrt(), "sqrt_1m_ac": (1 - ac).sqrt(), "snr": ac / (1 - ac), "ac": ac}[name]
            self._cache[key] = table.to(device=like.device, dtype=like.dtype)
        return self._cache[key]

    def _at(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Schedule value at integer steps t, shaped to broadcast against `like` (N, ...)."""
        return self._table(name, like)[t.to(like.device)].view(-1, *([1] * (like.ndim - 1)))

    def alpha_bar(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return self._at("ac", t, like)

    # ---- forward process ----------------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
        noise = normal_like(x0) if noise is None else noise
        return self._at("sqrt_ac", t, x0) * x0 + self._at("sqrt_1m_ac", t, x0) * noise

    # ---- parameterisations --------------------------------------------------------------------------
    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network regresses: eps, x0, or v = sqrt(abar) eps - sqrt(1 - abar) x0."""
        if self.parameterization == "eps":
            return noise
        if self.parameterization == "x0":
            return x0
        return self._at("sqrt_ac", t, x0) * noise - self._at("sqrt_1m_ac", t, x0) * x0

    def to_x0_eps(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network output in this process's parameterisation -> (x0_hat, eps_hat)."""
        a, s = self._at("sqrt_ac", t, x_t), self._at("sqrt_1m_ac", t, x_t)
        if self.parameterization == "eps":
            return (x_t - s * out) / a, out
        if self.parameterization == "x0":
            return out, (x_t - a * out) / s
        return a * x_t - s * out, s * x_t + a * out  # v

    def from_x0_eps(self, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(x0, eps) -> the network output that represents them (inverse of `to_x0_eps`)."""
        return self.target(x0, eps, t)

    # ---- training -----------------------------------------------------------------------------------
    def loss_weight(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Min-SNR-gamma weights per sample, expressed for this parameterisation (1 without gamma)."""
        if self.min_snr_gamma is None:
            return torch.ones(len(t), device=like.device, dtype=like.dtype)
        snr = self._table("snr", like)[t.to(like.device)]
        w = snr.clamp(max=self.min_snr_gamma)  # weight on the x0-MSE
        return {"eps": w / snr, "x0": w, "v": w / (snr + 1)}[self.parameterization]

    def sample_t(self, n: int, device: torch.device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return torch.randint(0, self.num_timesteps, (n,), device="cpu", generator=generator).to(device)

    def loss(self, model: Callable, x0: torch.Tensor, t: Optional[torch.Tensor] = None,
             noise: Optional[torch.Tensor] = None, **model_kwargs) -> torch.Tensor:
        """Weighted MSE between model(x_t, t) and the target, mean over elements and samples."""
        t = self.sample_t(len(x0), x0.device) if t is None else t
        noise = normal_like(x0) if noise is None else noise
        out = model(self.q_sample(x0, t, noise), t, **model_kwargs)
        per_sample = (out - self.target(x0, noise, t)).pow(2).flatten(1).mean(1)
        per_sample = per_sample * self.loss_weight(t, x0)
        return per_sample.mean()
