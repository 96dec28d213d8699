"""Discretisations: which integer timesteps a sampler visits, `spacing(num_timesteps, steps) -> [t_0 > ... > t_n]`.

Samplers take one as input (as k-diffusion's samplers take their sigmas), so a new spacing is one function
here and one YAML in conf/sampler/spacing/, and no sampler changes.
"""

from __future__ import annotations

import torch

from ldm.errors import ConfigError


def _check(num_timesteps: int, steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_timesteps:
        raise ConfigError(f"sampler.steps={steps} must be an integer in [1, {num_timesteps}] (the process has "
                          f"{num_timesteps} timesteps)")


def even(num_timesteps: int, steps: int) -> list[int]:
    """`steps` timesteps from T-1 down to 0, evenly spaced and rounded (DDIM's 'linspace' spacing)."""
    _check(num_timesteps, steps)
    ts = torch.linspace(num_timesteps - 1, 0, steps).round().long().tolist()
    return sorted(set(ts), reverse=True)


def trailing(num_timesteps: int, steps: int) -> list[int]:
    """Timesteps T-1, T-1-T/n, ...: starts at the last timestep and stops short of 0 (Lin et al., 2024,
    'Common Diffusion Noise Schedules and Sample Steps are Flawed', table 2)."""
    _check(num_timesteps, steps)
    ts = [round(num_timesteps - i * num_timesteps / steps) - 1 for i in range(steps)]
    return sorted({max(0, t) for t in ts}, reverse=True)
