"""Samplers: pure functions with one signature, `sampler(denoiser, process, x, *, steps, spacing, generator,
callback, ...)` (k-diffusion's shape).

`denoiser(x_t, t)` returns the network output in `process`'s parameterisation; `x` is the start
noise x_T, whose device and dtype every tensor follows. `spacing(num_timesteps, steps)` is the
discretisation (ldm.diffusion.spacing), an input rather than a property of the sampler.
`callback({"i", "t", "x", "denoised"})`, if given, sees every step's x_t and x0 prediction (progress
displays, the denoising figure). Each returns the final x_0 sample.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ldm.diffusion.process import GaussianDiffusion

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


Callback = Optional[Callable[[dict], None]]
Spacing = Callable[[int, int], list[int]]


def noise_generator(seed: int, device: Optional[torch.device | str] = None) -> torch.Generator:
    """The sampling noise's generator: on the CPU by default, so a seed gives the same samples on every device
    (each draw is copied to the model's device); on `device` (e.g. the model's CUDA device) draws stay there, with
    no copy per step, reproducible on that device and torch build but not equal to the CPU stream."""
    return torch.Generator(device=device or "cpu").manual_seed(seed)


def noise_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    """N(0, I) shaped as x, drawn where `generator` lives (the CPU without one), in x's device and dtype."""
    where = generator.device if generator is not None else "cpu"
    return torch.randn(x.shape, generator=generator, device=where).to(x)


def _abar(process: GaussianDiffusion, t: int, like: torch.Tensor) -> torch.Tensor:
    """alpha-bar at integer step t as a scalar tensor; t = -1 means the clean data (alpha-bar = 1)."""
    if t < 0:
        return torch.ones((), device=like.device, dtype=like.dtype)
    return process.alpha_bar(torch.tensor([t]), like).reshape(())


def _predict(denoiser: Denoiser, process: GaussianDiffusion, x: torch.Tensor, t: int, i: int,
             callback: Callback) -> tuple[torch.Tensor, torch.Tensor]:
    tt = torch.full((len(x),), t, device=x.device, dtype=torch.long)
    x0, eps = process.to_x0_eps(denoiser(x, tt), x, tt)
    if callback is not None:
        callback({"i": i, "t": t, "x": x, "denoised": x0})
    return x0, eps


@torch.no_grad()
def sample_ddim(denoiser: Denoiser, process: GaussianDiffusion, x: torch.Tensor, *, steps: int, spacing: Spacing,
                eta: float, generator: Optional[torch.Generator] = None, callback: Callback = None) -> torch.Tensor:
    """DDIM (Song et al., 2021): eta=0 deterministic, eta=1 matches DDPM's ancestral variance."""
    ts = spacing(process.num_timesteps, steps)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        x0, eps = _predict(denoiser, process, x, t, i, callback)
        a, a_prev = _abar(process, t, x), _abar(process, t_prev, x)
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp_min(0).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma ** 2).clamp_min(0).sqrt() * eps
        if t_prev >= 0 and eta > 0:
            x = x + sigma * noise_like(x, generator)
    return x


@torch.no_grad()
def sample_ddpm(denoiser: Denoiser, process: GaussianDiffusion, x: torch.Tensor, *, steps: int, spacing: Spacing,
                generator: Optional[torch.Generator] = None, callback: Callback = None) -> torch.Tensor:
    """Ancestral sampling from the posterior q(x_prev | x_t, x0_hat) (Ho et al., 2020); steps < T respaces it."""
    ts = spacing(process.num_timesteps, steps)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        x0, _ = _predict(denoiser, process, x, t, i, callback)
        a, a_prev = _abar(process, t, x), _abar(process, t_prev, x)
        beta = 1 - a / a_prev
        mean = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x) / (1 - a)
        if t_prev < 0:
            x = mean
        else:
            var = beta * (1 - a_prev) / (1 - a)
            x = mean + var.sqrt() * noise_like(x, generator)
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoiser: Denoiser, process: GaussianDiffusion, x: torch.Tensor, *, steps: int,
                    spacing: Spacing, generator: Optional[torch.Generator] = None,
                    callback: Callback = None) -> torch.Tensor:
    """DPM-Solver++(2M), multistep second order in log-SNR on x0 predictions (Lu et al., 2022)."""
    ts = spacing(process.num_timesteps, steps)
    x0_prev, h_prev = None, None
    for i, t in enumerate(ts):
        x0, _ = _predict(denoiser, process, x, t, i, callback)
        if i + 1 == len(ts):
            return x0  # the final step lands on sigma = 0, where x = x0
        a, a_next = _abar(process, t, x), _abar(process, ts[i + 1], x)
        lam, lam_next = 0.5 * (a / (1 - a)).log(), 0.5 * (a_next / (1 - a_next)).log()
        h = lam_next - lam
        d = x0
        # second order except on the first step and the last (lower_order_final, as diffusers does:
        # the final log-SNR step is the longest and extrapolating across it overshoots)
        if x0_prev is not None and i + 2 < len(ts):
            r = h_prev / h
            d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
        x = ((1 - a_next) / (1 - a)).sqrt() * x - a_next.sqrt() * torch.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x


EVEN = {"_target_": "ldm.diffusion.spacing.even", "_partial_": True}


def upgrade(cfg: Optional[dict]) -> Optional[dict]:
    """A sampler config as saved by checkpoints from before samplers took their spacing: those all sampled
    evenly spaced timesteps, so they get `spacing: even` (runs trained then still evaluate as they did)."""
    if cfg and str(cfg.get("_target_", "")).startswith("ldm.diffusion.samplers.") and "spacing" not in cfg:
        return {**cfg, "spacing": EVEN}
    return cfg


def check_sampler(sampler: Optional[Callable], num_timesteps: int) -> None:
    """Raise a configured sampler's spacing error now (e.g. steps > T), not at its first use after training."""
    keywords = getattr(sampler, "keywords", {})  # a functools.partial from a `_partial_: true` config
    if "spacing" in keywords and "steps" in keywords:
        keywords["spacing"](num_timesteps, keywords["steps"])


def clipped(denoiser: Denoiser, process: GaussianDiffusion, lo: torch.Tensor, hi: torch.Tensor) -> Denoiser:
    """`denoiser` whose x0 prediction is clamped to [lo, hi] at every step, with eps recomputed from the clamped
    x0 (guided-diffusion's clip_denoised + _predict_eps_from_xstart), returned in the process's parameterisation,
    so every sampler clips without knowing it."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0, _ = process.to_x0_eps(denoiser(x, t), x, t)
        x0 = torch.maximum(torch.minimum(x0, hi), lo)
        a = process.alpha_bar(t, x).reshape(-1, *[1] * (x.dim() - 1))
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return process.from_x0_eps(x0, eps, t)
    return denoise


class CountingDenoiser:
    """Wraps a denoiser and counts its network evaluations (NFE)."""

    def __init__(self, denoiser: Denoiser) -> None:
        self.denoiser, self.nfe = denoiser, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.denoiser(x, t)


def guided(model: Callable, y: Optional[torch.Tensor], scale: float, null_label: int) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans, 2022): out_u + scale (out_c - out_u); scale 1 = conditional only."""
    if y is None:
        return lambda x, t: model(x, t)
    if scale == 1.0:
        return lambda x, t: model(x, t, y=y)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        null = torch.full_like(y, null_label)
        out = model(torch.cat([x, x]), torch.cat([t, t]), y=torch.cat([y, null]))
        cond, uncond = out.chunk(2)
        return uncond + scale * (cond - uncond)

    return denoise
